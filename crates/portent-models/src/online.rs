//! Small online estimators the detectors are built from. Each is O(1) in time and memory.

use serde::{Deserialize, Serialize};

/// An exponentially weighted mean with a bias correction for its first samples, so that an
/// estimator fed three samples reports their mean rather than a value pulled towards zero.
///
/// It does not hold its smoothing factor: its owner passes the same [`Alpha`] to every
/// [`Ewma::push`]. A detector holds six of these for each of a million series, and their
/// factors are constants or follow from options every series of a model shares: kept inline
/// they were 48 of a detector's bytes.
#[derive(Copy, Clone, Debug, Default, PartialEq)]
pub struct Ewma {
    value: f64,
    weight: f64,
}

/// The smoothing factor of an [`Ewma`], in (0, 1].
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Alpha(f64);

impl Alpha {
    /// An average over roughly the last `span` samples (`alpha = 2 / (span + 1)`).
    pub const fn from_span(span: f64) -> Self {
        Self::new(2.0 / (span.max(1.0) + 1.0))
    }

    /// A smoothing factor of `alpha`, clamped into (0, 1].
    pub const fn new(alpha: f64) -> Self {
        Self(alpha.clamp(f64::MIN_POSITIVE, 1.0))
    }

    /// The factor.
    pub const fn get(self) -> f64 {
        self.0
    }
}

impl Ewma {
    /// An average of nothing yet.
    pub const fn new() -> Self {
        Self {
            value: 0.0,
            weight: 0.0,
        }
    }

    /// Adds one observation, with the owner's smoothing factor.
    #[inline]
    pub fn push(&mut self, alpha: Alpha, x: f64) {
        let a = alpha.0;
        self.value += a * (x - self.value);
        self.weight += a * (1.0 - self.weight);
    }

    /// The current mean; NaN before the first observation.
    #[inline]
    pub fn get(&self) -> f64 {
        if self.weight > 0.0 {
            self.value / self.weight
        } else {
            f64::NAN
        }
    }

    /// Moves the mean by `by`, as if every observation had been `by` larger.
    pub fn shift(&mut self, by: f64) {
        self.value += by * self.weight;
    }

    /// How much evidence there is, from 0 (none) to 1 (a full span's worth).
    pub fn weight(&self) -> f64 {
        self.weight
    }
}

/// An [`Ewma`] as the state format stores it: with the smoothing factor it used to hold.
#[derive(Copy, Clone, Debug, Serialize, Deserialize)]
pub(crate) struct StoredEwma {
    alpha: f64,
    value: f64,
    weight: f64,
}

impl Ewma {
    /// This average as stored, with the factor its owner gives it.
    pub(crate) fn stored(self, alpha: Alpha) -> StoredEwma {
        StoredEwma {
            alpha: alpha.0,
            value: self.value,
            weight: self.weight,
        }
    }
}

impl From<StoredEwma> for Ewma {
    /// The stored factor is dropped: the owner knows it.
    fn from(s: StoredEwma) -> Self {
        Self {
            value: s.value,
            weight: s.weight,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ewma_is_unbiased_at_start() {
        let a = Alpha::from_span(100.0);
        let mut e = Ewma::new();
        assert!(e.get().is_nan());
        e.push(a, 4.0);
        assert!((e.get() - 4.0).abs() < 1e-12);
        e.push(a, 6.0);
        assert!((e.get() - 5.0).abs() < 0.05);
    }
}
