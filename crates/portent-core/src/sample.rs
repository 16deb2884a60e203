//! What flows in: timestamped samples of one series, and the gaps between them.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Labels;

/// Milliseconds since the Unix epoch, as Prometheus counts time.
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    /// From milliseconds since the epoch.
    pub const fn from_millis(ms: i64) -> Self {
        Self(ms)
    }

    /// From whole seconds since the epoch.
    pub const fn from_secs(s: i64) -> Self {
        Self(s.saturating_mul(1000))
    }

    /// Milliseconds since the epoch.
    pub const fn millis(self) -> i64 {
        self.0
    }

    /// Seconds since the epoch, with the milliseconds as a fraction.
    pub fn secs_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    /// Milliseconds from `earlier` to `self` (negative if `earlier` is later).
    pub const fn millis_since(self, earlier: Timestamp) -> i64 {
        self.0.saturating_sub(earlier.0)
    }

    /// This time moved by `ms` milliseconds.
    pub const fn add_millis(self, ms: i64) -> Self {
        Self(self.0.saturating_add(ms))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The bit pattern Prometheus writes to mark a series stale (a NaN with payload 2).
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// Whether `v` is Prometheus' staleness marker rather than an ordinary NaN.
pub fn is_stale_marker(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// One observation of one series. The value may be NaN or infinite: models must cope.
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// When it was observed.
    pub t: Timestamp,
    /// What was observed.
    pub v: f64,
}

impl Sample {
    /// A sample at `t` with value `v`.
    pub const fn new(t: Timestamp, v: f64) -> Self {
        Self { t, v }
    }

    /// Whether the value is usable (neither NaN nor infinite).
    pub fn is_finite(&self) -> bool {
        self.v.is_finite()
    }
}

/// A stretch of time in which a series had no usable sample although one was expected.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// The last usable sample before the gap.
    pub from: Timestamp,
    /// The first usable sample after it.
    pub to: Timestamp,
}

impl Gap {
    /// How long the gap lasted, in milliseconds.
    pub const fn millis(&self) -> i64 {
        self.to.millis_since(self.from)
    }
}

/// The median spacing between consecutive `samples` (in time order) in milliseconds, if there
/// are two or more; see [`Series::median_step`].
pub fn median_step(samples: &[Sample]) -> Option<i64> {
    let mut steps: Vec<i64> = samples
        .windows(2)
        .map(|w| w[1].t.millis_since(w[0].t))
        .filter(|&d| d > 0)
        .collect();
    if steps.is_empty() {
        return None;
    }
    let mid = steps.len() / 2;
    Some(*steps.select_nth_unstable(mid).1)
}

/// A series: its identity and its samples in time order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series {
    /// Who it is.
    pub labels: Labels,
    /// What it said, sorted by time.
    pub samples: Vec<Sample>,
}

impl Series {
    /// The median spacing between consecutive samples in milliseconds, if there are two or more.
    ///
    /// The median, not the mean, so that gaps and bursts do not distort the expected step.
    pub fn median_step(&self) -> Option<i64> {
        median_step(&self.samples)
    }

    /// The gaps: spans between usable samples longer than `factor` times `step` milliseconds.
    ///
    /// NaN and infinite samples do not close a gap: they are not usable data.
    pub fn gaps(&self, step: i64, factor: f64) -> Vec<Gap> {
        let limit = (step as f64 * factor) as i64;
        let mut gaps = Vec::new();
        let mut last: Option<Timestamp> = None;
        for s in self.samples.iter().filter(|s| s.is_finite()) {
            if let Some(prev) = last
                && s.t.millis_since(prev) > limit
            {
                gaps.push(Gap {
                    from: prev,
                    to: s.t,
                });
            }
            last = Some(s.t);
        }
        gaps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(points: &[(i64, f64)]) -> Series {
        Series {
            labels: Labels::empty(),
            samples: points
                .iter()
                .map(|&(t, v)| Sample::new(Timestamp::from_secs(t), v))
                .collect(),
        }
    }

    #[test]
    fn stale_marker_is_not_any_nan() {
        assert!(is_stale_marker(f64::from_bits(STALE_NAN_BITS)));
        assert!(!is_stale_marker(f64::NAN));
        assert!(!is_stale_marker(1.0));
    }

    #[test]
    fn median_step_ignores_gaps() {
        let s = series(&[(0, 1.0), (60, 1.0), (120, 1.0), (3600, 1.0), (3660, 1.0)]);
        assert_eq!(s.median_step(), Some(60_000));
        assert_eq!(series(&[(0, 1.0)]).median_step(), None);
    }

    #[test]
    fn gaps_skip_unusable_samples() {
        let s = series(&[
            (0, 1.0),
            (60, f64::NAN),
            (120, f64::INFINITY),
            (180, 2.0),
            (240, 3.0),
        ]);
        let gaps = s.gaps(60_000, 1.5);
        assert_eq!(
            gaps,
            vec![Gap {
                from: Timestamp::from_secs(0),
                to: Timestamp::from_secs(180)
            }]
        );
        assert_eq!(gaps[0].millis(), 180_000);
    }
}
