//! Calibration: how surprising is a value of a statistic, on this series?
//!
//! Peaks over threshold, as in SPOT (Siffer et al., "Anomaly Detection in Streams with Extreme
//! Value Theory", KDD 2017): a high quantile `u` of the statistic is tracked online, and the
//! excesses over it are modelled as exponential with a tracked mean `β`. The tail probability
//! of a value `x > u` is then `P(X > u) · exp(−(x − u) / β)`, which extrapolates sensibly past
//! anything seen yet, adapts to heavy or light tails per series, and needs two numbers of state.
//!
//! The result is a *surprise*, `−log10 p`: 2 is a 1-in-100 value, 4 a 1-in-10,000 one.

use serde::{Deserialize, Serialize};

/// How many observations the prior is worth. A sparse statistic (mostly zero, like a new
/// record) would otherwise estimate its exceedance rate from a handful of samples, and its first
/// real value would look like a one-in-ten-thousand event.
const PRIOR_WEIGHT: f64 = 50.0;

/// A per-series model of a non-negative statistic's upper tail.
///
/// The threshold is `u = mean + 2·sd` of the statistic rather than a tracked quantile: moments
/// converge as fast up as down, where a stochastic-gradient quantile at the 98th percentile
/// falls fifty times slower than it rises and takes hundreds of thousands of samples to forget
/// a bad start. The exceedance rate above `u` is tracked alongside, so `u` need not be any
/// particular quantile.
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tail {
    mean: f64,
    var: f64,
    /// The probability of exceeding `u`.
    rate: f64,
    /// The mean excess over `u`.
    beta: f64,
    /// Observations so far (saturating), for the learning-rate schedule.
    n: u32,
    /// How many observations the estimates remember, roughly.
    memory: f32,
}

impl Tail {
    /// A tail model with a prior mean and standard deviation of the statistic, remembering
    /// about `memory` observations. The prior matters only for the first few dozen
    /// observations.
    pub fn new(mean: f64, sd: f64, memory: f64) -> Self {
        Self {
            mean,
            var: sd * sd,
            rate: 0.05,
            beta: sd.max(f64::MIN_POSITIVE) * 0.5,
            n: 0,
            memory: memory as f32,
        }
    }

    /// The threshold above which the tail is modelled.
    #[inline]
    fn u(&self) -> f64 {
        (self.mean + 2.0 * self.var.sqrt()).max(f64::MIN_POSITIVE)
    }

    /// The surprise of `x`: `−log10` of its estimated tail probability. Small in the bulk;
    /// grows linearly in `x` beyond the threshold.
    #[inline]
    pub fn surprise(&self, x: f64) -> f64 {
        if x.is_nan() || x <= 0.0 {
            return 0.0;
        }
        let u = self.u();
        let base = -self.rate.clamp(1e-4, 0.5).log10(); // the surprise at u
        if x <= u {
            // The bulk matters little and needs no finer model than a smooth ramp.
            let r = x / u;
            return base * r * r;
        }
        base + (x - u) / self.beta.max(f64::MIN_POSITIVE) * std::f64::consts::LOG10_E
    }

    /// The value whose surprise is `s`: the inverse of [`Tail::surprise`] (for bands).
    pub fn quantile_for_surprise(&self, s: f64) -> f64 {
        let u = self.u();
        let base = -self.rate.clamp(1e-4, 0.5).log10();
        if s <= base {
            u * (s / base).max(0.0).sqrt()
        } else {
            u + (s - base) * self.beta / std::f64::consts::LOG10_E
        }
    }

    /// Learns from `x`. Early on, steps are 1/(n + PRIOR_WEIGHT), a running average that starts
    /// from the prior; later they settle at 1/memory.
    #[inline]
    pub fn update(&mut self, x: f64) {
        if !x.is_finite() || x < 0.0 {
            return;
        }
        self.n = self.n.saturating_add(1);
        let w = (1.0 / (f64::from(self.n) + PRIOR_WEIGHT)).max(1.0 / f64::from(self.memory));
        let u = self.u();
        // Winsorised, so that one enormous anomaly cannot blow the model up.
        let x = x.min(u + 10.0 * self.beta);
        let above = x > u;
        if above {
            // Excesses are rarer than observations: their mean learns at the matching rate.
            let wb = (w / self.rate.max(0.01)).min(0.1);
            self.beta += wb * ((x - u) - self.beta);
            self.beta = self.beta.max(1e-9 * u);
        }
        self.rate += w * (f64::from(u8::from(above)) - self.rate);
        let d = x - self.mean;
        self.mean += w * d;
        self.var += w * (d * (x - self.mean) - self.var);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use portent_core::seeded::uniform;

    #[test]
    fn exponential_tail_is_calibrated() {
        // Exp(1): P(X > x) = e^{-x}, so the surprise of x is x·log10(e).
        let mut t = Tail::new(10.0, 5.0, 5000.0);
        for i in 0..200_000 {
            t.update(-(1.0 - uniform(i)).ln());
        }
        for x in [5.0, 7.0, 9.2] {
            let want = x * std::f64::consts::LOG10_E;
            let got = t.surprise(x);
            assert!((got - want).abs() < 0.35, "x {x}: {got} vs {want}");
        }
        let x = t.quantile_for_surprise(4.0);
        assert!((t.surprise(x) - 4.0).abs() < 1e-9);
    }

    #[test]
    fn one_huge_value_barely_moves_the_tail() {
        let mut t = Tail::new(1.0, 0.5, 5000.0);
        for i in 0..10_000 {
            t.update(-(1.0 - uniform(i)).ln());
        }
        let before = t.surprise(8.0);
        t.update(1e9);
        assert!((t.surprise(8.0) - before).abs() < 0.3);
    }
}
