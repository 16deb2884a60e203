//! Small online estimators the detectors are built from. Each is O(1) in time and memory.

use serde::{Deserialize, Serialize};

/// An exponentially weighted mean with a bias correction for its first samples, so that an
/// estimator fed three samples reports their mean rather than a value pulled towards zero.
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ewma {
    alpha: f64,
    value: f64,
    weight: f64,
}

impl Ewma {
    /// An average over roughly the last `span` samples (`alpha = 2 / (span + 1)`).
    pub fn with_span(span: f64) -> Self {
        Self::with_alpha(2.0 / (span.max(1.0) + 1.0))
    }

    /// An average with smoothing factor `alpha` in (0, 1].
    pub fn with_alpha(alpha: f64) -> Self {
        Self {
            alpha: alpha.clamp(f64::MIN_POSITIVE, 1.0),
            value: 0.0,
            weight: 0.0,
        }
    }

    /// Adds one observation.
    #[inline]
    pub fn push(&mut self, x: f64) {
        self.value += self.alpha * (x - self.value);
        self.weight += self.alpha * (1.0 - self.weight);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ewma_is_unbiased_at_start() {
        let mut e = Ewma::with_span(100.0);
        assert!(e.get().is_nan());
        e.push(4.0);
        assert!((e.get() - 4.0).abs() < 1e-12);
        e.push(6.0);
        assert!((e.get() - 5.0).abs() < 0.05);
    }
}
