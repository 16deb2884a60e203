//! Sample values: decimal numbers, `NaN` and infinities.

/// What every value error says is accepted.
pub(crate) const EXPECTED_VALUE: &str = "expected a number, NaN, Inf, +Inf or -Inf";

/// Parses a value, surrounding ASCII whitespace ignored.
///
/// std's parser already takes `NaN`, `inf`, `+Inf`, `-Infinity` in any case, which covers
/// Prometheus' `NaN`, `+Inf`, `-Inf`. NaN and infinities are kept: the models decide what they
/// mean.
#[inline]
pub(crate) fn parse_value(raw: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(raw.trim_ascii()).ok()?;
    s.parse::<f64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_nan_and_infinities() {
        assert_eq!(parse_value(b"10844"), Some(10844.0));
        assert_eq!(parse_value(b" -1.5e3 "), Some(-1500.0));
        assert_eq!(parse_value(b".5"), Some(0.5));
        for inf in ["Inf", "+Inf", "inf", "INF", "+inf", "infinity"] {
            assert_eq!(parse_value(inf.as_bytes()), Some(f64::INFINITY), "{inf}");
        }
        assert_eq!(parse_value(b"-Inf"), Some(f64::NEG_INFINITY));
        for nan in ["NaN", "nan", "NAN"] {
            assert!(
                parse_value(nan.as_bytes()).is_some_and(f64::is_nan),
                "{nan}"
            );
        }
    }

    #[test]
    fn garbage_is_refused() {
        for bad in ["", "abc", "1,5", "1.2.3", "0x10", "\u{fffd}"] {
            assert_eq!(parse_value(bad.as_bytes()), None, "{bad}");
        }
    }
}
