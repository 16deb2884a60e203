//! Prometheus-style durations (`30s`, `1h30m`, `28d`) and byte sizes (`32MiB`).

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// Units of a duration, largest first, as Prometheus orders them.
const DURATION_UNITS: [(&str, u64); 7] = [
    ("y", 365 * 86_400_000),
    ("w", 7 * 86_400_000),
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// Parses a Prometheus duration: one or more `<integer><unit>` terms with units `y`, `w`, `d`,
/// `h`, `m`, `s`, `ms`, largest first, each at most once (`1h30m`, `90s`, `28d`). A lone `0`
/// is zero.
///
/// ```
/// use std::time::Duration;
/// use portent_config::parse_duration;
///
/// assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
/// assert!(parse_duration("30 minutes").is_err());
/// ```
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let bad = |why: &str| Err(format!("bad duration {s:?}: {why}"));
    if s.is_empty() {
        return bad("empty; write e.g. 30s, 5m, 1h, 28d");
    }
    let mut rest = s;
    let mut total: u64 = 0;
    // Index into DURATION_UNITS of the last unit seen: each later unit must be smaller.
    let mut last: Option<usize> = None;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return bad("expected a number; write e.g. 30s, 5m, 1h, 28d");
        }
        let (number, after) = rest.split_at(digits);
        let unit_len = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, after) = after.split_at(unit_len);
        if unit.is_empty() {
            return bad("missing unit (ms, s, m, h, d, w or y)");
        }
        let Some(index) = DURATION_UNITS.iter().position(|(u, _)| *u == unit) else {
            return bad(&format!(
                "unknown unit {unit:?} (use ms, s, m, h, d, w or y)"
            ));
        };
        if last.is_some_and(|l| index <= l) {
            return bad("units must go from largest to smallest, each once (e.g. 1h30m)");
        }
        last = Some(index);
        let term = number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(DURATION_UNITS[index].1));
        total = match term.and_then(|t| total.checked_add(t)) {
            Some(t) => t,
            None => return bad("too long"),
        };
        rest = after;
    }
    Ok(Duration::from_millis(total))
}

/// Formats a duration the way [`parse_duration`] reads it, with the largest units that fit
/// (`5400s` → `1h30m`; zero → `0s`). Sub-millisecond parts are dropped.
pub fn format_duration(d: Duration) -> String {
    let mut ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, size) in DURATION_UNITS {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

/// Units of a byte size: decimal and binary multiples.
const SIZE_UNITS: [(&str, u64); 8] = [
    ("B", 1),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("", 1),
];

/// Parses a byte size: an integer with an optional unit `B`, `KB`, `MB`, `GB` (powers of
/// 1000) or `KiB`, `MiB`, `GiB` (powers of 1024): `32MiB`, `500KB`, `1048576`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = s.split_at(digits);
    let unit = unit.trim_start();
    let bad = |why: &str| Err(format!("bad size {s:?}: {why}"));
    if number.is_empty() {
        return bad("expected a whole number of bytes with an optional unit, e.g. 32MiB");
    }
    let Some((_, size)) = SIZE_UNITS.iter().find(|(u, _)| *u == unit) else {
        return bad(&format!(
            "unknown unit {unit:?} (use B, KB, MB, GB, KiB, MiB or GiB)"
        ));
    };
    match number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(*size))
    {
        Some(n) => Ok(n),
        None => bad("too large"),
    }
}

/// A duration as written in the YAML file: parsed while deserializing, so a bad one is
/// reported with its line and column.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct RawDuration(pub(crate) Duration);

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 30s, 5m, 1h or 28d")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RawDuration, E> {
                parse_duration(s).map(RawDuration).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<RawDuration, E> {
                if n == 0 {
                    Ok(RawDuration(Duration::ZERO))
                } else {
                    Err(E::custom(format!(
                        "bad duration {n}: missing unit (ms, s, m, h, d, w or y)"
                    )))
                }
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<RawDuration, E> {
                Err(E::custom(format!(
                    "bad duration {n}: write e.g. 30s, 5m, 1h, 28d"
                )))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<RawDuration, E> {
                Err(E::custom(format!(
                    "bad duration {n}: write e.g. 30s, 5m, 1h, 28d"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

/// A byte size as written in the YAML file: a plain integer or a string with a unit.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct RawSize(pub(crate) u64);

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as 32MiB or 1048576")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RawSize, E> {
                parse_size(s).map(RawSize).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<RawSize, E> {
                Ok(RawSize(n))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<RawSize, E> {
                u64::try_from(n)
                    .map(RawSize)
                    .map_err(|_| E::custom(format!("bad size {n}: must not be negative")))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_prometheus() {
        let ok = [
            ("0", 0),
            ("500ms", 500),
            ("30s", 30_000),
            ("5m", 300_000),
            ("1h30m", 5_400_000),
            ("28d", 28 * 86_400_000),
            ("1w", 7 * 86_400_000),
            ("1y2w3d4h5m6s7ms", 0),
        ];
        for (s, ms) in ok {
            let d = parse_duration(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            if ms > 0 {
                assert_eq!(d, Duration::from_millis(ms), "{s}");
            }
        }
        for (s, why) in [
            ("", "empty"),
            ("30", "missing unit"),
            ("1hour", "unknown unit \"hour\""),
            ("30m1h", "largest to smallest"),
            ("1m1m", "largest to smallest"),
            ("-5m", "expected a number"),
            ("1.5h", "missing unit"),
            ("5 m", "missing unit"),
            ("99999999999999999999y", "too long"),
        ] {
            let e = parse_duration(s).unwrap_err();
            assert!(e.contains(why), "{s}: {e}");
        }
    }

    #[test]
    fn durations_format_round_trip() {
        for s in ["0s", "500ms", "30s", "1h30m", "2w", "1y", "4w", "1d1ms"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
        assert_eq!(format_duration(Duration::from_secs(28 * 86_400)), "4w");
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("32MiB"), Ok(32 << 20));
        assert_eq!(parse_size("500KB"), Ok(500_000));
        assert_eq!(parse_size("2 GiB"), Ok(2 << 30));
        assert!(
            parse_size("32mb")
                .unwrap_err()
                .contains("unknown unit \"mb\"")
        );
        assert!(parse_size("MiB").unwrap_err().contains("whole number"));
        assert!(
            parse_size("99999999999GiB")
                .unwrap_err()
                .contains("too large")
        );
    }
}
