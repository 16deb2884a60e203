//! The seasonal baseline: a linear trend plus daily and weekly Fourier seasonality, fitted
//! robustly (Huber IRLS) so that past incidents in the window do not bend the expectation.
//!
//! It is Prophet's additive model without the changepoints: `y(t) = a + b·τ + Σ daily + Σ weekly`
//! with `τ` time scaled to the fit window. Changepoints are not needed here because the streaming
//! detector corrects the baseline online with a local level between refits.
//!
//! The fit is on the hot path of a fleet (every series is refitted on a schedule), so it is
//! written for speed: the design matrix is built once, column-major, `XᵀX` is formed with
//! vectorisable dot products, and each robust iteration only subtracts the rows whose weight
//! dropped below one, instead of rebuilding `XᵀWX`.

// Index loops read best in the matrix code: the same index walks several arrays.
#![allow(clippy::needless_range_loop)]

use std::f64::consts::TAU;

use portent_core::{FitError, Sample, Timestamp};
use serde::{Deserialize, Serialize};

use crate::linalg::{MAX_FEATURES, cholesky_solve, dot, median};

/// One day, in milliseconds.
pub const DAY_MS: i64 = 86_400_000;
/// One week, in milliseconds.
pub const WEEK_MS: i64 = 7 * DAY_MS;

/// Which seasonal components a baseline carries, and with how many harmonics each.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seasonality {
    /// Daily Fourier harmonics (0 = no daily seasonality).
    pub daily: u8,
    /// Weekly Fourier harmonics (0 = no weekly seasonality).
    pub weekly: u8,
}

impl Seasonality {
    /// No seasonality: trend only.
    pub const NONE: Seasonality = Seasonality {
        daily: 0,
        weekly: 0,
    };
    /// Prophet's defaults: 4 daily and 3 weekly harmonics.
    pub const FULL: Seasonality = Seasonality {
        daily: 4,
        weekly: 3,
    };
    /// Daily only, with twice Prophet's daily harmonics: infrastructure days are often
    /// square-ish (a batch window, business hours) and four harmonics ring around the edges.
    /// The features freed by dropping the weekly terms pay for it (18 of at most 20).
    pub const DAILY: Seasonality = Seasonality {
        daily: 8,
        weekly: 0,
    };

    /// How many regression features this implies (intercept and trend included).
    pub const fn features(self) -> usize {
        2 + 2 * self.daily as usize + 2 * self.weekly as usize
    }

    /// Whether any seasonal component is on.
    pub const fn is_seasonal(self) -> bool {
        self.daily > 0 || self.weekly > 0
    }
}

/// How to fit a [`SeasonalBaseline`].
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeasonalConfig {
    /// Components and harmonics.
    pub seasonality: Seasonality,
    /// Huber's tuning constant, in robust standard deviations: residuals beyond it are
    /// down-weighted. 1.345 gives 95% efficiency on Gaussian noise.
    pub huber_k: f64,
    /// Reweighting iterations after the least-squares start.
    pub iterations: u8,
}

impl Default for SeasonalConfig {
    fn default() -> Self {
        Self {
            seasonality: Seasonality::FULL,
            huber_k: 1.345,
            iterations: 3,
        }
    }
}

/// A fitted seasonal baseline. Small and `Copy`: it is part of every series' state.
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeasonalBaseline {
    seasonality: Seasonality,
    /// The start of the fit window; the trend's origin.
    t0: Timestamp,
    /// The fit window's length in ms; the trend's unit.
    span_ms: f64,
    coef: [f64; MAX_FEATURES],
    /// Robust standard deviation of the fit's residuals.
    scale: f64,
}

/// Fills `out` with the regression features of time `t` (see the module docs for the layout).
#[inline]
fn features(s: Seasonality, t0: Timestamp, span_ms: f64, t: Timestamp, out: &mut [f64]) {
    out[0] = 1.0;
    out[1] = t.millis_since(t0) as f64 / span_ms;
    let mut i = 2;
    for (harmonics, period) in [(s.daily, DAY_MS), (s.weekly, WEEK_MS)] {
        if harmonics == 0 {
            continue;
        }
        let phase = t.millis().rem_euclid(period) as f64 / period as f64;
        let (s1, c1) = (TAU * phase).sin_cos();
        let (mut sk, mut ck) = (s1, c1);
        for _ in 0..harmonics {
            out[i] = ck;
            out[i + 1] = sk;
            i += 2;
            // Angle addition gives the next harmonic without another sin_cos.
            (sk, ck) = (sk * c1 + ck * s1, ck * c1 - sk * s1);
        }
    }
}

/// Reusable buffers, so that refitting a fleet does not allocate per series.
#[derive(Debug, Default)]
pub struct FitScratch {
    x: Vec<f64>,
    y: Vec<f64>,
    t: Vec<Timestamp>,
    r: Vec<f64>,
    abs: Vec<f64>,
}

impl SeasonalBaseline {
    /// Fits the baseline to `history` (finite samples only are used).
    pub fn fit(config: &SeasonalConfig, history: &[Sample]) -> Result<Self, FitError> {
        Self::fit_with(config, history, &mut FitScratch::default())
    }

    /// [`SeasonalBaseline::fit`] with caller-owned buffers.
    pub fn fit_with(
        config: &SeasonalConfig,
        history: &[Sample],
        scratch: &mut FitScratch,
    ) -> Result<Self, FitError> {
        let s = config.seasonality;
        let p = s.features();
        if p > MAX_FEATURES {
            return Err(FitError::Config(format!(
                "seasonal: {} daily and {} weekly harmonics need {p} features, at most {MAX_FEATURES} are supported",
                s.daily, s.weekly
            )));
        }
        scratch.t.clear();
        scratch.y.clear();
        for smp in history.iter().filter(|s| s.is_finite()) {
            scratch.t.push(smp.t);
            scratch.y.push(smp.v);
        }
        let n = scratch.y.len();
        let needed = (3 * p).max(8);
        if n < needed {
            return Err(FitError::NotEnoughData { needed, got: n });
        }
        let t0 = scratch.t[0];
        let span_ms = (scratch.t[n - 1].millis_since(t0) as f64).max(1.0);

        // Column-major design matrix: column j is x[j*n .. (j+1)*n].
        scratch.x.resize(p * n, 0.0);
        let mut row = [0.0f64; MAX_FEATURES];
        for (i, &t) in scratch.t.iter().enumerate() {
            features(s, t0, span_ms, t, &mut row);
            for j in 0..p {
                scratch.x[j * n + i] = row[j];
            }
        }
        let col = |j: usize| &scratch.x[j * n..(j + 1) * n];
        let mut xtx = [0.0f64; MAX_FEATURES * MAX_FEATURES];
        let mut xty = [0.0f64; MAX_FEATURES];
        for i in 0..p {
            for j in 0..=i {
                let v = dot(col(i), col(j));
                xtx[i * p + j] = v;
                xtx[j * p + i] = v;
            }
            xty[i] = dot(col(i), &scratch.y);
        }

        let mut coef = xty;
        if !cholesky_solve(&xtx, p, &mut coef) {
            return Err(FitError::Config("seasonal: singular design".into()));
        }
        let mut scale = residual_scale(scratch, p, n, &coef);
        for _ in 0..config.iterations {
            if scale.is_nan() || scale <= 0.0 {
                break; // an exact fit: nothing to down-weight
            }
            // XᵀWX = XᵀX − Σ (1 − wᵢ) xᵢxᵢᵀ over the down-weighted rows only.
            let mut a = xtx;
            let mut b = xty;
            let limit = config.huber_k * scale;
            for i in 0..n {
                let r = scratch.r[i];
                if r.abs() <= limit {
                    continue;
                }
                let d = 1.0 - limit / r.abs();
                for j in 0..p {
                    row[j] = scratch.x[j * n + i];
                }
                for j in 0..p {
                    let dj = d * row[j];
                    for k in 0..=j {
                        a[j * p + k] -= dj * row[k];
                    }
                    b[j] -= dj * scratch.y[i];
                }
            }
            for j in 0..p {
                for k in 0..j {
                    a[k * p + j] = a[j * p + k];
                }
            }
            let mut next = b;
            if !cholesky_solve(&a, p, &mut next) {
                break; // keep the last good coefficients
            }
            coef = next;
            scale = residual_scale(scratch, p, n, &coef);
        }
        Ok(Self {
            seasonality: s,
            t0,
            span_ms,
            coef,
            scale,
        })
    }

    /// The expected value at `t` (trend extrapolated linearly beyond the fit window).
    #[inline]
    pub fn predict(&self, t: Timestamp) -> f64 {
        let mut row = [0.0f64; MAX_FEATURES];
        let p = self.seasonality.features();
        features(self.seasonality, self.t0, self.span_ms, t, &mut row);
        let mut y = 0.0;
        for j in 0..p {
            y += self.coef[j] * row[j];
        }
        y
    }

    /// The seasonal part alone at `t`: the prediction without intercept and trend.
    #[inline]
    pub fn seasonal_part(&self, t: Timestamp) -> f64 {
        self.predict(t)
            - self.coef[0]
            - self.coef[1] * t.millis_since(self.t0) as f64 / self.span_ms
    }

    /// The trend's slope, in value units per millisecond.
    pub fn slope_per_ms(&self) -> f64 {
        self.coef[1] / self.span_ms
    }

    /// The robust standard deviation of the residuals over the fit window.
    pub fn residual_scale(&self) -> f64 {
        self.scale
    }

    /// The components this baseline carries.
    pub fn seasonality(&self) -> Seasonality {
        self.seasonality
    }
}

/// Fills `scratch.r` with the residuals of `coef` and returns their robust standard deviation
/// (1.4826 × the median absolute residual).
fn residual_scale(scratch: &mut FitScratch, p: usize, n: usize, coef: &[f64]) -> f64 {
    scratch.r.clear();
    scratch.r.extend_from_slice(&scratch.y);
    for (j, &c) in coef.iter().enumerate().take(p) {
        let col = &scratch.x[j * n..(j + 1) * n];
        for (r, x) in scratch.r.iter_mut().zip(col) {
            *r -= c * x;
        }
    }
    scratch.abs.clear();
    scratch.abs.extend(scratch.r.iter().map(|r| r.abs()));
    1.4826 * median(&mut scratch.abs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn week(f: impl Fn(i64) -> f64, step_ms: i64, n: i64) -> Vec<Sample> {
        (0..n)
            .map(|i| {
                let t = 1_700_000_000_000 + i * step_ms;
                Sample::new(Timestamp::from_millis(t), f(t))
            })
            .collect()
    }

    fn truth(t: i64) -> f64 {
        let d = TAU * (t.rem_euclid(DAY_MS) as f64 / DAY_MS as f64);
        let w = TAU * (t.rem_euclid(WEEK_MS) as f64 / WEEK_MS as f64);
        100.0 + 1e-9 * (t - 1_700_000_000_000) as f64 + 10.0 * d.sin() + 3.0 * (2.0 * d).cos()
            - 5.0 * w.cos()
    }

    #[test]
    fn recovers_a_known_seasonal_signal_exactly() {
        let h = week(truth, 60_000, 10_080 * 2);
        let m = SeasonalBaseline::fit(&SeasonalConfig::default(), &h).unwrap();
        for probe in [0, 1234, 20_000] {
            let t = Timestamp::from_millis(1_700_000_000_000 + probe * 60_000);
            assert!((m.predict(t) - truth(t.millis())).abs() < 1e-6);
        }
        // Extrapolates a day past the window.
        let t = Timestamp::from_millis(1_700_000_000_000 + 21 * DAY_MS);
        assert!((m.predict(t) - truth(t.millis())).abs() < 1e-5);
        assert!(m.residual_scale() < 1e-6);
    }

    #[test]
    fn an_incident_in_the_window_does_not_bend_the_baseline() {
        let mut h = week(truth, 60_000, 10_080);
        // A six-hour outage at +300 on day 3, plus NaN and Inf that must be ignored.
        for s in &mut h[3 * 1440..3 * 1440 + 360] {
            s.v += 300.0;
        }
        h[10].v = f64::NAN;
        h[11].v = f64::INFINITY;
        let m = SeasonalBaseline::fit(&SeasonalConfig::default(), &h).unwrap();
        let t = h[5 * 1440].t;
        let err = (m.predict(t) - truth(t.millis())).abs();
        assert!(err < 1.0, "robust fit off by {err}");
        let ols = SeasonalBaseline::fit(
            &SeasonalConfig {
                iterations: 0,
                ..SeasonalConfig::default()
            },
            &h,
        )
        .unwrap();
        let ols_err = (ols.predict(t) - truth(t.millis())).abs();
        assert!(
            ols_err > 5.0 * err,
            "least squares {ols_err} vs robust {err}"
        );
    }

    #[test]
    fn too_little_data_is_an_error() {
        let h = week(truth, 60_000, 10);
        assert_eq!(
            SeasonalBaseline::fit(&SeasonalConfig::default(), &h),
            Err(FitError::NotEnoughData {
                needed: 48,
                got: 10
            })
        );
    }

    #[test]
    fn state_round_trips_exactly() {
        let h = week(truth, 300_000, 4000);
        let m = SeasonalBaseline::fit(&SeasonalConfig::default(), &h).unwrap();
        let bytes = postcard::to_stdvec(&m).unwrap();
        let back: SeasonalBaseline = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, m);
    }
}
