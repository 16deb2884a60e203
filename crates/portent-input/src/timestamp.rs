//! Timestamps as they appear in CSV files, to Prometheus' milliseconds.
//!
//! The fixed `YYYY-MM-DD HH:MM:SS[.fff][Z|±HH:MM]` layout (NAB's, and most RFC 3339 exports) and
//! plain unix numbers are parsed by hand: they are nearly every row of every file, and jiff's
//! general parser costs several times more per row. Anything else goes to jiff.

use portent_core::Timestamp;

/// Why a timestamp was refused. Each message ends with the forms that are accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    /// The field was empty.
    #[error("timestamp is empty ({EXPECTED})")]
    Empty,
    /// It has a date's layout but no such date exists (month 13, February 30, ...).
    #[error("timestamp {0:?}: not a valid date ({EXPECTED})")]
    InvalidDate(String),
    /// The date is fine but the time of day is not (hour 24, minute 60, ...).
    #[error("timestamp {0:?}: not a valid time of day ({EXPECTED})")]
    InvalidTime(String),
    /// A number or date too far from 1970 to be a Prometheus timestamp.
    #[error("timestamp {0:?}: out of range (expected a time between years -9999 and 9999)")]
    OutOfRange(String),
    /// None of the accepted forms.
    #[error("timestamp {0:?}: not a recognised form ({EXPECTED})")]
    Unrecognised(String),
}

/// The accepted forms, as every error states them.
const EXPECTED: &str = "expected RFC 3339, \"YYYY-MM-DD HH:MM:SS\", or unix seconds/milliseconds";

/// Numbers at least this large (in absolute value) are unix milliseconds, smaller ones seconds.
///
/// 1e11 seconds is the year 5138, and 1e11 milliseconds is March 1973, so the two ranges only
/// meet for millisecond timestamps before 1973, which real monitoring data does not have.
pub const MILLIS_THRESHOLD: f64 = 1e11;
const MILLIS_THRESHOLD_INT: u64 = 100_000_000_000;

/// jiff's range, so that every timestamp read can also be printed.
pub(crate) const MIN_MILLIS: i64 = -377_705_023_201_000;
pub(crate) const MAX_MILLIS: i64 = 253_402_207_200_999;

/// Parses one timestamp in any of the accepted forms.
///
/// * RFC 3339 and ISO 8601 with an offset: `2024-01-01T00:00:00Z`, `2024-01-01T01:00:00+01:00`,
///   with fractional seconds (truncated to the millisecond) and `t`, `z` or a space allowed;
/// * `YYYY-MM-DD HH:MM:SS` or `YYYY-MM-DDTHH:MM:SS`, optionally with fractional seconds and
///   without an offset (NAB's form), read as UTC;
/// * unix seconds, integer or decimal (`1704067200`, `1704067200.25`), or unix milliseconds as an
///   integer (`1704067200000`): a number whose magnitude is at least [`MILLIS_THRESHOLD`] (1e11)
///   is milliseconds, anything smaller is seconds.
///
/// A leap second (`23:59:60`) is read as `23:59:59`, as jiff does.
///
/// ```
/// use portent_input::parse_timestamp;
///
/// let t = parse_timestamp("2014-07-01 00:30:00").unwrap();
/// assert_eq!(t, parse_timestamp("2014-07-01T02:30:00+02:00").unwrap());
/// assert_eq!(t, parse_timestamp("1404174600").unwrap());
/// assert_eq!(t, parse_timestamp("1404174600000").unwrap());
/// ```
pub fn parse_timestamp(s: &str) -> Result<Timestamp, TimestampError> {
    parse_bytes(s.as_bytes())
}

/// [`parse_timestamp`] on raw bytes, with surrounding ASCII whitespace ignored.
pub(crate) fn parse_bytes(raw: &[u8]) -> Result<Timestamp, TimestampError> {
    let b = raw.trim_ascii();
    if b.is_empty() {
        return Err(TimestampError::Empty);
    }
    let date_like = b.len() >= 10 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-';
    if date_like && b.len() >= 19 {
        match civil_fast(b) {
            Fast::Done(t) => Ok(t),
            Fast::Invalid(kind) => Err(kind.error(b)),
            Fast::Other => civil_slow(b),
        }
    } else if !date_like && is_number(b) {
        unix(b)
    } else {
        civil_slow(b)
    }
}

/// What the fast path made of a date-shaped field.
enum Fast {
    Done(Timestamp),
    Invalid(Bad),
    /// Not the fixed layout; jiff may still know it.
    Other,
}

#[derive(Clone, Copy)]
enum Bad {
    Date,
    Time,
    Range,
}

impl Bad {
    fn error(self, b: &[u8]) -> TimestampError {
        let text = String::from_utf8_lossy(b).into_owned();
        match self {
            Bad::Date => TimestampError::InvalidDate(text),
            Bad::Time => TimestampError::InvalidTime(text),
            Bad::Range => TimestampError::OutOfRange(text),
        }
    }
}

/// Two ASCII digits as a number, or `None`.
#[inline]
fn two(b: &[u8], at: usize) -> Option<u32> {
    let (h, l) = (b[at].wrapping_sub(b'0'), b[at + 1].wrapping_sub(b'0'));
    (h < 10 && l < 10).then_some(u32::from(h) * 10 + u32::from(l))
}

/// `YYYY-MM-DD`, validated, as days since 1970-01-01. `b` has at least 10 bytes.
fn date_prefix(b: &[u8]) -> Result<i64, Fast> {
    let (Some(c), Some(y), Some(m), Some(d)) = (two(b, 0), two(b, 2), two(b, 5), two(b, 8)) else {
        return Err(Fast::Other);
    };
    if b[7] != b'-' {
        return Err(Fast::Other);
    }
    let year = c * 100 + y;
    if !(1..=12).contains(&m) || d == 0 || d > days_in_month(year, m) {
        return Err(Fast::Invalid(Bad::Date));
    }
    Ok(days_from_civil(i64::from(year), m, d))
}

/// `HH:MM:SS` at `b[11..19]`, validated, as seconds into the day.
fn time_of_day(b: &[u8]) -> Result<i64, Fast> {
    let (Some(h), Some(m), Some(s)) = (two(b, 11), two(b, 14), two(b, 17)) else {
        return Err(Fast::Other);
    };
    if b[13] != b':' || b[16] != b':' {
        return Err(Fast::Other);
    }
    if h > 23 || m > 59 || s > 60 {
        return Err(Fast::Invalid(Bad::Time));
    }
    Ok(i64::from(h * 3600 + m * 60 + s.min(59)))
}

/// The fixed layouts: `YYYY-MM-DD[T ]HH:MM:SS[.f{1,9}][Z|±HH:MM]`. Caller checked `b.len() >= 19`.
fn civil_fast(b: &[u8]) -> Fast {
    let days = match date_prefix(b) {
        Ok(d) => d,
        Err(f) => return f,
    };
    if !matches!(b[10], b' ' | b'T' | b't') {
        return Fast::Other;
    }
    let secs = match time_of_day(b) {
        Ok(s) => s,
        Err(f) => return f,
    };
    let mut rest = &b[19..];
    let mut millis = 0i64;
    if let [b'.', frac @ ..] = rest {
        let digits = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || digits > 9 {
            return Fast::Other;
        }
        let head = &frac[..digits.min(3)];
        let scale = [100, 10, 1][head.len() - 1];
        millis = head
            .iter()
            .fold(0, |acc, &c| acc * 10 + i64::from(c - b'0'))
            * scale;
        rest = &frac[digits..];
    }
    let offset_secs = match rest {
        [] | [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (Some(h), Some(m)) = (two(rest, 1), two(rest, 4)) else {
                return Fast::Other;
            };
            if h > 23 || m > 59 {
                return Fast::Other;
            }
            let off = i64::from(h * 3600 + m * 60);
            if *sign == b'-' { -off } else { off }
        }
        _ => return Fast::Other,
    };
    let ms = (days * 86_400 + secs - offset_secs) * 1000 + millis;
    if ms > MAX_MILLIS {
        // Only late on 9999-12-31, beyond what jiff can represent.
        return Fast::Invalid(Bad::Range);
    }
    Fast::Done(Timestamp::from_millis(ms))
}

/// Everything else with a date in it, through jiff; errors say which part is wrong.
fn civil_slow(b: &[u8]) -> Result<Timestamp, TimestampError> {
    let text = || String::from_utf8_lossy(b).into_owned();
    let Ok(s) = std::str::from_utf8(b) else {
        return Err(TimestampError::Unrecognised(text()));
    };
    let parsed = s.parse::<jiff::Timestamp>().ok().or_else(|| {
        let dt = s.parse::<jiff::civil::DateTime>().ok()?;
        jiff::tz::Offset::UTC.to_timestamp(dt).ok()
    });
    if let Some(t) = parsed {
        // Floor, not jiff's truncation toward zero, so that times before 1970 order correctly.
        let ms = t.as_nanosecond().div_euclid(1_000_000);
        return i64::try_from(ms)
            .map(Timestamp::from_millis)
            .map_err(|_| TimestampError::OutOfRange(text()));
    }
    // Say which part is wrong where the layout makes it clear.
    if b.len() >= 10 && b[4] == b'-' {
        if let Err(Fast::Invalid(kind)) = date_prefix(b) {
            return Err(kind.error(b));
        }
        if b.len() >= 19
            && matches!(b[10], b' ' | b'T' | b't')
            && let Err(Fast::Invalid(kind)) = time_of_day(b)
        {
            return Err(kind.error(b));
        }
    }
    Err(TimestampError::Unrecognised(text()))
}

/// Whether `b` could be a plain number: digits, with only signs, points and exponents besides.
fn is_number(b: &[u8]) -> bool {
    b.iter().any(u8::is_ascii_digit)
        && b.iter()
            .all(|c| matches!(c, b'0'..=b'9' | b'+' | b'-' | b'.' | b'e' | b'E'))
}

/// Unix seconds or milliseconds, told apart by magnitude.
fn unix(b: &[u8]) -> Result<Timestamp, TimestampError> {
    let out_of_range = || TimestampError::OutOfRange(String::from_utf8_lossy(b).into_owned());
    let (negative, unsigned) = match b {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, b),
    };
    let int_len = unsigned.iter().take_while(|c| c.is_ascii_digit()).count();
    let (int, frac) = unsigned.split_at(int_len);
    let frac = match frac {
        [] => Some(&[][..]),
        [b'.', digits @ ..] if digits.iter().all(u8::is_ascii_digit) => Some(digits),
        _ => None,
    };
    let ms = match frac {
        // Exact integer arithmetic: no float rounding for the common forms.
        Some(frac) if int_len > 0 && int_len <= 18 => {
            let whole = int
                .iter()
                .fold(0u64, |acc, &c| acc * 10 + u64::from(c - b'0'));
            let ms = if whole >= MILLIS_THRESHOLD_INT {
                i128::from(whole)
            } else {
                let sub: u64 = (0..3)
                    .map(|i| frac.get(i).map_or(0, |&c| u64::from(c - b'0')))
                    .fold(0, |acc, d| acc * 10 + d);
                i128::from(whole) * 1000 + i128::from(sub)
            };
            if negative { -ms } else { ms }
        }
        _ => {
            let Some(x) = std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse::<f64>().ok())
            else {
                return Err(TimestampError::Unrecognised(
                    String::from_utf8_lossy(b).into_owned(),
                ));
            };
            let ms = if x.abs() >= MILLIS_THRESHOLD {
                x
            } else {
                x * 1000.0
            };
            if !ms.is_finite() || ms.abs() > 1e16 {
                return Err(out_of_range());
            }
            ms.round() as i128
        }
    };
    if ms < i128::from(MIN_MILLIS) || ms > i128::from(MAX_MILLIS) {
        return Err(out_of_range());
    }
    Ok(Timestamp::from_millis(ms as i64))
}

fn is_leap(year: u32) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a valid proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        parse_timestamp(s).unwrap().millis()
    }

    fn err(s: &str) -> String {
        parse_timestamp(s).unwrap_err().to_string()
    }

    #[test]
    fn nab_layout_is_utc() {
        assert_eq!(ms("2014-07-01 00:00:00"), 1_404_172_800_000);
        assert_eq!(ms("2014-07-01 00:30:00"), 1_404_174_600_000);
        assert_eq!(ms("1970-01-01 00:00:00"), 0);
        assert_eq!(ms("2014-07-01 00:00:00.25"), 1_404_172_800_250);
        assert_eq!(ms("2014-07-01 00:00:00.123456789"), 1_404_172_800_123);
        assert_eq!(ms("  2014-07-01 00:00:00 "), 1_404_172_800_000);
    }

    #[test]
    fn rfc3339_forms() {
        assert_eq!(ms("2024-01-01T00:00:00Z"), 1_704_067_200_000);
        assert_eq!(ms("2024-01-01t00:00:00z"), 1_704_067_200_000);
        assert_eq!(ms("2024-01-01T00:00:00"), 1_704_067_200_000);
        assert_eq!(ms("2024-01-01T01:00:00+01:00"), 1_704_067_200_000);
        assert_eq!(ms("2023-12-31T18:30:00-05:30"), 1_704_067_200_000);
        assert_eq!(ms("2024-01-01T00:00:00.5Z"), 1_704_067_200_500);
        assert_eq!(ms("2024-01-01T00:00:00.123456+00:00"), 1_704_067_200_123);
        // Through jiff: forms outside the fixed layout.
        assert_eq!(ms("2024-01-01T00:00Z"), 1_704_067_200_000);
        assert_eq!(ms("20240101T000000Z"), 1_704_067_200_000);
        assert_eq!(
            ms("2024-01-01T01:00:00+01:00[Europe/Paris]"),
            1_704_067_200_000
        );
        assert_eq!(ms("2024-01-01"), 1_704_067_200_000);
        // Before 1970 the fraction still counts forward in time.
        assert_eq!(ms("1969-12-31T23:59:59.9995Z"), -1);
        assert_eq!(ms("1969-12-31T23:59:59.999Z"), -1);
    }

    #[test]
    fn fast_path_agrees_with_jiff() {
        for s in [
            "2000-02-29 12:34:56",
            "1900-03-01T00:00:00",
            "0001-01-01 00:00:00",
            "9999-12-30 21:59:59.999",
            "1969-07-20 20:17:40",
            "2016-12-31 23:59:60",
            "2024-06-30T23:59:59.001-12:00",
        ] {
            let slow = civil_slow(s.as_bytes()).unwrap();
            assert_eq!(parse_timestamp(s).unwrap(), slow, "{s}");
        }
    }

    #[test]
    fn leap_years() {
        assert_eq!(ms("2024-02-29 00:00:00"), 1_709_164_800_000);
        assert_eq!(ms("2000-02-29 00:00:00"), 951_782_400_000);
        let e = err("2023-02-29 00:00:00");
        assert!(e.contains("not a valid date"), "{e}");
        assert!(err("1900-02-29 00:00:00").contains("not a valid date"));
    }

    #[test]
    fn unix_seconds_and_millis() {
        assert_eq!(ms("1404172800"), 1_404_172_800_000);
        assert_eq!(ms("1404172800.5"), 1_404_172_800_500);
        assert_eq!(ms("1404172800.123999"), 1_404_172_800_123);
        assert_eq!(ms("1404172800000"), 1_404_172_800_000);
        assert_eq!(ms("+1404172800"), 1_404_172_800_000);
        assert_eq!(ms("-1.5"), -1500);
        assert_eq!(ms("0"), 0);
        assert_eq!(ms("1.4041728e9"), 1_404_172_800_000);
        assert_eq!(ms("1.4041728e12"), 1_404_172_800_000);
        // The threshold: 1e11 - 1 is seconds (year 5138), 1e11 milliseconds (1973).
        assert_eq!(ms("99999999999"), 99_999_999_999_000);
        assert_eq!(ms("100000000000"), 100_000_000_000);
    }

    #[test]
    fn errors_say_what_is_wrong_and_what_is_expected() {
        assert_eq!(
            err("2014-13-01 00:00:00"),
            "timestamp \"2014-13-01 00:00:00\": not a valid date (expected RFC 3339, \
             \"YYYY-MM-DD HH:MM:SS\", or unix seconds/milliseconds)"
        );
        assert_eq!(
            err("2014-12-01 24:00:00"),
            "timestamp \"2014-12-01 24:00:00\": not a valid time of day (expected RFC 3339, \
             \"YYYY-MM-DD HH:MM:SS\", or unix seconds/milliseconds)"
        );
        assert_eq!(
            err("yesterday"),
            "timestamp \"yesterday\": not a recognised form (expected RFC 3339, \
             \"YYYY-MM-DD HH:MM:SS\", or unix seconds/milliseconds)"
        );
        assert_eq!(
            err(""),
            "timestamp is empty (expected RFC 3339, \"YYYY-MM-DD HH:MM:SS\", or unix \
             seconds/milliseconds)"
        );
        assert_eq!(
            err("1e300"),
            "timestamp \"1e300\": out of range (expected a time between years -9999 and 9999)"
        );
        assert!(err("2014-04-31T00:00:00Z").contains("not a valid date"));
        assert!(err("2014-04-30T00:60:00Z").contains("not a valid time of day"));
        assert!(err("2014-04-30T00:00:00+0x:00").contains("not a recognised form"));
        assert!(err("2014-04-30 00:00:00 UTC").contains("not a recognised form"));
        assert!(err("NaN").contains("not a recognised form"));
        assert!(err("inf").contains("not a recognised form"));
        assert!(err("1.2.3").contains("not a recognised form"));
        assert!(err("99999999999999999999").contains("out of range"));
        assert!(err("9999-12-31 23:59:59").contains("out of range"));
    }

    #[test]
    fn days_from_civil_matches_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(days_from_civil(0, 3, 1), -719_468);
    }
}
