//! Robust per-feature scaling, so that features in different units (cores, bytes, seconds)
//! weigh alike.

use serde::{Deserialize, Serialize};

use super::{outer_quartiles, quantile_select};
use crate::linalg::{MAX_FEATURES, cholesky_solve};

/// `1.4826 · MAD` estimates the standard deviation of normal data.
const MAD_TO_SD: f64 = 1.482_6;
/// `IQR / 1.349` estimates the standard deviation of normal data.
const IQR_TO_SD: f64 = 1.0 / 1.349;

/// Centres each feature on its median and divides by a robust spread, both fitted on the
/// training window: a few anomalies in the window move neither.
///
/// The spread is `1.4826 · MAD`; when more than half the values are equal (a mostly-zero error
/// rate) the MAD is zero, and `IQR / 1.349` is used, then the mean absolute deviation from the
/// median, then 1 for a constant feature.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RobustScaler {
    center: Vec<f64>,
    scale: Vec<f64>,
}

impl RobustScaler {
    /// Fits on `rows`, all of width `width` and finite (the caller checked).
    pub fn fit(rows: &[&[f64]], width: usize) -> Self {
        Self::fit_columns(
            (0..width)
                .map(|j| rows.iter().map(|r| r[j]).collect())
                .collect(),
        )
    }

    /// Fits on the values of each feature.
    fn fit_columns(cols: Vec<Vec<f64>>) -> Self {
        let mut center = Vec::with_capacity(cols.len());
        let mut scale = Vec::with_capacity(cols.len());
        for mut col in cols {
            if col.is_empty() {
                center.push(0.0);
                scale.push(1.0);
                continue;
            }
            // Order statistics by selection, not sorting: the same values, in linear time (a
            // fit scales every feature of a week of rows twice).
            let med = quantile_select(&mut col, 0.5);
            let mut dev: Vec<f64> = col.iter().map(|v| (v - med).abs()).collect();
            let mad = quantile_select(&mut dev, 0.5);
            let usable = |s: f64| s > 1e-12 * med.abs().max(1e-300);
            let s = if usable(MAD_TO_SD * mad) {
                MAD_TO_SD * mad
            } else if let [q1, q3] = outer_quartiles(&mut col)
                && usable(IQR_TO_SD * (q3 - q1))
            {
                IQR_TO_SD * (q3 - q1)
            } else {
                // Rare (a mostly constant feature), so the sum runs in sorted order as it
                // always has, which keeps the fitted scale the same to the last bit.
                col.sort_by(f64::total_cmp);
                let mean_abs = col.iter().map(|v| (v - med).abs()).sum::<f64>() / col.len() as f64;
                if usable(mean_abs) { mean_abs } else { 1.0 }
            };
            center.push(med);
            scale.push(s);
        }
        Self { center, scale }
    }

    /// Writes the scaled `row` into `out` (both of the fitted width).
    pub fn transform_into(&self, row: &[f64], out: &mut [f64]) {
        for (((o, x), c), s) in out.iter_mut().zip(row).zip(&self.center).zip(&self.scale) {
            *o = (x - c) / s;
        }
    }

    /// Each feature's median on the training window.
    pub fn center(&self) -> &[f64] {
        &self.center
    }

    /// Each feature's robust spread on the training window.
    pub fn scale(&self) -> &[f64] {
        &self.scale
    }
}

/// Each feature's residual from the others: `z_j` minus its least-squares prediction from the
/// other scaled features, in units of the residual's own robust spread.
///
/// A row that breaks a correlation (memory up while latency is down, when both follow
/// traffic) is ordinary on every feature but far out on these residuals, where axis-parallel
/// splits see it at once; and the residual of feature `j` says "`j` is unusual given the
/// others", which is the attribution an SRE wants.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct Residuals {
    /// Per feature: the intercept, then one coefficient per feature (its own is 0).
    coef: Vec<Vec<f64>>,
    center: Vec<f64>,
    scale: Vec<f64>,
}

/// A ridge on the normal equations, relative to the number of rows: keeps duplicated features
/// solvable.
const RIDGE: f64 = 1e-6;

impl Residuals {
    /// Fits on scaled rows `z` (concatenated, each `width` wide) and, if it could, replaces
    /// them with their standardised residuals, as [`Self::transform_into`] would write them.
    /// `None` with a single feature or more than `linalg::MAX_FEATURES + 1`.
    pub(super) fn fit(z: &mut [f64], width: usize) -> Option<Self> {
        if !(2..=MAX_FEATURES + 1).contains(&width) || z.is_empty() {
            return None;
        }
        let n = z.len() / width;
        // The Gram matrix of [1, z].
        let p = width + 1;
        let mut g = vec![0.0; p * p];
        let mut x = vec![1.0; p];
        for row in z.chunks_exact(width) {
            x[1..].copy_from_slice(row);
            // The upper triangle only: `x_i · x_k` is `x_k · x_i` to the bit, so the lower one
            // is mirrored after the sums.
            for (i, gi) in g.chunks_exact_mut(p).enumerate() {
                let xi = x[i];
                for (g, xk) in gi[i..].iter_mut().zip(&x[i..]) {
                    *g += xi * xk;
                }
            }
        }
        for i in 0..p {
            for k in 0..i {
                g[i * p + k] = g[k * p + i];
            }
        }
        let mut coef = Vec::with_capacity(width);
        for j in 0..width {
            // The system for predicting z_j from [1, z without j].
            let keep: Vec<usize> = (0..p).filter(|&i| i != j + 1).collect();
            let q = keep.len();
            let mut a = vec![0.0; q * q];
            let mut b = vec![0.0; q];
            for (r, &i) in keep.iter().enumerate() {
                for (c, &k) in keep.iter().enumerate() {
                    a[r * q + c] = g[i * p + k];
                }
                a[r * q + r] += RIDGE * n as f64;
                b[r] = g[i * p + j + 1];
            }
            if !cholesky_solve(&a, q, &mut b) {
                return None;
            }
            let mut c = vec![0.0; p];
            for (&i, v) in keep.iter().zip(b) {
                c[i] = v;
            }
            coef.push(c);
        }
        let mut r = Self {
            coef,
            center: vec![0.0; width],
            scale: vec![1.0; width],
        };
        // The raw residuals, in place of `z`: with centre 0 and scale 1, `transform_into`
        // writes `z_j − pred`, to which the fitted centre and scale then apply exactly as
        // `transform_into` will apply them.
        let mut out = vec![0.0; width];
        let mut cols: Vec<Vec<f64>> = vec![Vec::with_capacity(n); width];
        for row in z.chunks_exact_mut(width) {
            r.transform_into(row, &mut out);
            for (c, v) in cols.iter_mut().zip(&out) {
                c.push(*v);
            }
            row.copy_from_slice(&out);
        }
        let spread = RobustScaler::fit_columns(cols);
        r.center = spread.center;
        r.scale = spread.scale;
        for row in z.chunks_exact_mut(width) {
            for ((v, c), s) in row.iter_mut().zip(&r.center).zip(&r.scale) {
                *v = (*v - c) / s;
            }
        }
        Some(r)
    }

    /// Writes the standardised residuals of scaled row `z` into `out`.
    pub(super) fn transform_into(&self, z: &[f64], out: &mut [f64]) {
        for (j, o) in out.iter_mut().enumerate() {
            let c = &self.coef[j];
            let pred = c[0] + c[1..].iter().zip(z).map(|(c, z)| c * z).sum::<f64>();
            *o = (z[j] - pred - self.center[j]) / self.scale[j];
        }
    }
}

/// Scaled values are clipped to this many robust standard deviations, so that one absurd value
/// in the training window cannot dominate a fit (it stays far out).
pub(super) const CLIP: f64 = 10.0;

/// A row as the Isolation Forest sees it: with two features or more (up to 21, beyond which
/// the regressions are not fitted), each feature's standardised residual from the others
/// ([`Residuals`]); otherwise each feature robustly scaled. Scaled values are clipped to
/// ±[`CLIP`] first.
///
/// Residuals alone, not the scaled values beside them: the forest is there for relations
/// between metrics, which only the residuals show, and splits spent on the features' own levels
/// would dilute them (a metric's own level is what the univariate detectors judge, and
/// [`super::combine`] merges the two). A gross outlier on one feature still breaks its relation
/// to the others, so it is still far out on its residual.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct Expand {
    scaler: RobustScaler,
    residuals: Option<Residuals>,
}

impl Expand {
    /// Fits on finite rows of width `width`, and returns their expansions (concatenated), the
    /// same to the bit as [`Self::transform_into`]'s: a fit computes them on the way.
    pub(super) fn fit(rows: &[&[f64]], width: usize) -> (Self, Vec<f64>) {
        let mut expand = Self {
            scaler: RobustScaler::fit(rows, width),
            residuals: None,
        };
        let mut z = vec![0.0; rows.len() * width];
        for (r, o) in rows.iter().zip(z.chunks_exact_mut(width)) {
            expand.scaled_into(r, o);
        }
        expand.residuals = Residuals::fit(&mut z, width);
        (expand, z)
    }

    /// Writes a finite `row` robustly scaled and clipped into `out` (of the row's width): each
    /// feature's distance from its own usual level, before the residuals.
    pub(super) fn scaled_into(&self, row: &[f64], out: &mut [f64]) {
        self.scaler.transform_into(row, out);
        out.iter_mut().for_each(|x| *x = x.clamp(-CLIP, CLIP));
    }

    /// Writes the expansion of a finite `row` into `out` (of the row's width).
    pub(super) fn transform_into(&self, row: &[f64], out: &mut [f64]) {
        self.scaled_into(row, out);
        if let Some(res) = &self.residuals {
            // Residuals are fitted on at most MAX_FEATURES + 1 features: no allocation per row.
            let mut z = [0.0; MAX_FEATURES + 1];
            let z = &mut z[..out.len()];
            z.copy_from_slice(out);
            res.transform_into(z, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_mad_ignore_outliers_and_fall_back_for_mostly_constant_features() {
        let rows: Vec<Vec<f64>> = (0..101)
            .map(|i| {
                let x = f64::from(i);
                // Feature 1: zero except for 30 values, so its MAD is 0.
                let sparse = if i % 10 < 3 { x } else { 0.0 };
                vec![if i == 100 { 1e9 } else { x }, sparse, 5.0]
            })
            .collect();
        let refs: Vec<&[f64]> = rows.iter().map(Vec::as_slice).collect();
        let s = RobustScaler::fit(&refs, 3);
        assert_eq!(s.center()[0], 50.0);
        assert!(
            (s.scale()[0] - 25.0 * MAD_TO_SD).abs() < 1e-9,
            "{:?}",
            s.scale()
        );
        assert_eq!(s.center()[1], 0.0);
        assert!(s.scale()[1] > 0.0);
        assert_eq!(s.scale()[2], 1.0);
        let mut out = [0.0; 3];
        s.transform_into(&[75.0, 0.0, 5.0], &mut out);
        assert!((out[0] - 1.0 / MAD_TO_SD).abs() < 1e-9);
        assert_eq!(out[2], 0.0);
    }
}
