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
//!
//! It is also reproducible to the bit: each of those sums is taken in one fixed order, whatever
//! blocking makes it fast (`gram_lower`, `downdate`), so making the fit faster cannot move a
//! replay's scores. The last digits do matter on some series: on NAB's `rogue_agent_key_hold`,
//! summing the same terms in another order moved scores by up to 4e-11.

// Index loops read best in the matrix code: the same index walks several arrays.
#![allow(clippy::needless_range_loop)]

use std::f64::consts::TAU;

use portent_core::{FitError, Sample, Timestamp};
use serde::{Deserialize, Serialize};

use crate::linalg::{MAX_FEATURES, cholesky_solve, gram_lower, median_of_magnitudes};

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

/// The phase angle of `t` in a cycle of `period` ms, in radians.
#[inline]
fn angle(t: i64, period: i64) -> f64 {
    TAU * (t.rem_euclid(period) as f64 / period as f64)
}

/// `(sin, cos)` of the daily and weekly angle of `t`, for the components `s` has (a component
/// without harmonics gets angle zero, unused).
#[inline]
fn fundamentals(s: Seasonality, t: i64) -> [(f64, f64); 2] {
    let exact = |harmonics: u8, period: i64| {
        if harmonics == 0 {
            (0.0, 1.0)
        } else {
            angle(t, period).sin_cos()
        }
    };
    [exact(s.daily, DAY_MS), exact(s.weekly, WEEK_MS)]
}

/// Fills `out` with the regression features (see the module docs for the layout) from the
/// trend coordinate and the `(sin, cos)` of the daily and weekly angle.
#[inline]
fn fill(s: Seasonality, trend: f64, fundamentals: [(f64, f64); 2], out: &mut [f64]) {
    out[0] = 1.0;
    out[1] = trend;
    let mut i = 2;
    for (harmonics, (s1, c1)) in [s.daily, s.weekly].into_iter().zip(fundamentals) {
        let (mut sk, mut ck) = (s1, c1);
        for _ in 0..harmonics {
            out[i] = ck;
            out[i + 1] = sk;
            i += 2;
            (sk, ck) = next_harmonic((sk, ck), (s1, c1));
        }
    }
}

/// `(sin, cos)` of `(k + 1)θ` from those of `kθ` and `θ`: angle addition gives the next harmonic
/// without another `sin_cos`. The fit's columns and `predict` both use it, so they agree.
#[inline]
fn next_harmonic((sk, ck): (f64, f64), (s1, c1): (f64, f64)) -> (f64, f64) {
    (sk * c1 + ck * s1, ck * c1 - sk * s1)
}

/// Fills `out` with the regression features of time `t` (see the module docs for the layout).
#[inline]
fn features(s: Seasonality, t0: Timestamp, span_ms: f64, t: Timestamp, out: &mut [f64]) {
    let trend = t.millis_since(t0) as f64 / span_ms;
    fill(s, trend, fundamentals(s, t.millis()), out);
}

/// In [`Rows`], an exact `sin_cos` at least this often. Each rotation adds about one ulp of
/// rounding, so the angles stay within ~1e-14 of exact.
const ANCHOR_EVERY: u32 = 64;

/// The trend and seasonal angles of a run of timestamps in order, cheaper than [`features`]
/// per row: for [`SeasonalBaseline::residuals`] over thousands of samples at each refit.
///
/// Two `sin_cos` per sample are most of a prediction's cost. Scraped metrics come at a fixed
/// step, and advancing an angle by a fixed step is a rotation (four multiplications), so while
/// the step repeats the angles are rotated, and re-anchored on an exact `sin_cos` every
/// [`ANCHOR_EVERY`] samples to bound the accumulated error. Deterministic: the same
/// timestamps give the same rows. An irregular step costs what [`features`] costs.
///
/// Not used by the fit, which stays exact to the bit (see the module docs).
struct Rows {
    s: Seasonality,
    t0: Timestamp,
    span_ms: f64,
    prev: Option<i64>,
    step: i64,
    /// `(sin, cos)` of the daily and weekly angle of the previous sample.
    angles: [(f64, f64); 2],
    /// `(sin, cos)` of one `step` of the daily and weekly angle, once computed for this step.
    turn: Option<[(f64, f64); 2]>,
    since_exact: u32,
}

impl Rows {
    fn new(s: Seasonality, t0: Timestamp, span_ms: f64) -> Self {
        Self {
            s,
            t0,
            span_ms,
            prev: None,
            step: 0,
            angles: [(0.0, 1.0); 2],
            turn: None,
            since_exact: 0,
        }
    }

    /// The trend and `(sin, cos)` of the daily and weekly angle of `t`: what [`fill`] needs.
    #[inline]
    fn next(&mut self, t: Timestamp) -> (f64, [(f64, f64); 2]) {
        let t_ms = t.millis();
        let dt = self.prev.map(|p| t_ms.wrapping_sub(p));
        self.prev = Some(t_ms);
        if dt != Some(self.step) {
            // A new step: rotate by it only once it repeats, so that an irregular series never
            // pays for a turn it does not use.
            self.step = dt.unwrap_or(0);
            self.turn = None;
            self.since_exact = ANCHOR_EVERY;
        }
        if self.since_exact < ANCHOR_EVERY {
            let (s, step) = (self.s, self.step);
            // The angles of `step` ms past the epoch are the angles of one step.
            let turn = *self.turn.get_or_insert_with(|| fundamentals(s, step));
            for (angle, turn) in self.angles.iter_mut().zip(turn) {
                *angle = next_harmonic(*angle, turn);
            }
            self.since_exact += 1;
        } else {
            self.angles = fundamentals(self.s, t_ms);
            self.since_exact = 0;
        }
        (t.millis_since(self.t0) as f64 / self.span_ms, self.angles)
    }
}

/// Slots of a [`PhaseMemo`], as a power of two: a 28-day window of 10-minute bins has 1,008
/// phases of the week, and a quarter of the table is few enough collisions.
const MEMO_BITS: u32 = 12;

/// `sin_cos` of the phase angles of one cycle (a day or a week), remembered.
///
/// `sin_cos` was a fifth of a fit, and scraped series come back to the same phases cycle
/// after cycle: a week at one minute holds each minute of the day seven times, four weeks
/// of 10-minute bins each phase of the week four times. A direct-mapped table: a phase whose
/// slot another took is computed afresh, so every value is exactly `sin_cos` of its angle,
/// and a fit gives the same bits with the memo or without it.
#[derive(Debug)]
struct PhaseMemo {
    period: i64,
    /// The phase (ms into the cycle) each slot holds; -1 for none.
    phases: Vec<i64>,
    values: Vec<(f64, f64)>,
}

impl PhaseMemo {
    fn new(period: i64) -> Self {
        Self {
            period,
            phases: vec![-1; 1 << MEMO_BITS],
            values: vec![(0.0, 1.0); 1 << MEMO_BITS],
        }
    }

    /// `(sin, cos)` of the angle of `t` in the cycle: [`angle`]`(t, period).sin_cos()`.
    #[inline]
    fn sin_cos(&mut self, t: i64) -> (f64, f64) {
        let phase = t.rem_euclid(self.period);
        // Fibonacci hashing: multiples of a step spread evenly over the slots.
        let slot =
            ((phase as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - MEMO_BITS)) as usize;
        if self.phases[slot] != phase {
            self.phases[slot] = phase;
            self.values[slot] = angle(t, self.period).sin_cos();
        }
        self.values[slot]
    }
}

/// Reusable buffers, so that refitting a fleet does not allocate per series.
#[derive(Debug)]
pub struct FitScratch {
    /// The design matrix, column-major, with the values as its last column.
    x: Vec<f64>,
    r: Vec<f64>,
    abs: Vec<f64>,
    /// The rows a robust iteration down-weights, and by how much.
    out_rows: Vec<usize>,
    out_d: Vec<f64>,
    daily: PhaseMemo,
    weekly: PhaseMemo,
}

impl Default for FitScratch {
    fn default() -> Self {
        Self {
            x: Vec::new(),
            r: Vec::new(),
            abs: Vec::new(),
            out_rows: Vec::new(),
            out_d: Vec::new(),
            daily: PhaseMemo::new(DAY_MS),
            weekly: PhaseMemo::new(WEEK_MS),
        }
    }
}

/// Columns of the augmented design matrix `[X | y]`.
const MAX_COLS: usize = MAX_FEATURES + 1;

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
        let usable = || history.iter().filter(|s| s.is_finite());
        let n = usable().count();
        let needed = (3 * p).max(8);
        let (Some(first), Some(last)) = (usable().next(), usable().next_back()) else {
            return Err(FitError::NotEnoughData { needed, got: n });
        };
        if n < needed {
            return Err(FitError::NotEnoughData { needed, got: n });
        }
        let t0 = first.t;
        let span_ms = (last.t.millis_since(t0) as f64).max(1.0);

        // The augmented design matrix [X | y], column-major: column j is x[j*n .. (j+1)*n], the
        // values are column p. With y as a column, one Gram matrix holds both XᵀX and Xᵀy.
        let cols = p + 1;
        if scratch.x.len() < cols * n {
            scratch.x.resize(cols * n, 0.0); // every entry is written below: no need to zero it
        }
        let x = &mut scratch.x[..cols * n];
        let (ones, rest) = x.split_at_mut(n);
        ones.fill(1.0);
        let (trend, rest) = rest.split_at_mut(n);
        let (seasonal, values) = rest.split_at_mut((p - 2) * n);
        // One pass over the samples for trend, values and the fundamentals; then each higher
        // harmonic is a column computed from two earlier ones, which vectorises.
        let weekly_at = 2 * usize::from(s.daily) * n;
        for (i, smp) in usable().enumerate() {
            trend[i] = smp.t.millis_since(t0) as f64 / span_ms;
            values[i] = smp.v;
            if s.daily > 0 {
                (seasonal[n + i], seasonal[i]) = scratch.daily.sin_cos(smp.t.millis());
            }
            if s.weekly > 0 {
                let (sw, cw) = scratch.weekly.sin_cos(smp.t.millis());
                (seasonal[weekly_at + n + i], seasonal[weekly_at + i]) = (sw, cw);
            }
        }
        for (harmonics, at) in [(s.daily, 0), (s.weekly, weekly_at)] {
            let component = &mut seasonal[at..at + 2 * usize::from(harmonics) * n];
            for k in 1..usize::from(harmonics) {
                let (done, next) = component.split_at_mut(2 * k * n);
                let (c1, s1) = (&done[..n], &done[n..2 * n]);
                let (ck, sk) = (
                    &done[(2 * k - 2) * n..(2 * k - 1) * n],
                    &done[(2 * k - 1) * n..],
                );
                let (cn, sn) = next.split_at_mut(n);
                let rows = cn.iter_mut().zip(&mut sn[..n]).zip(c1.iter().zip(s1));
                for (((cn, sn), (&c1, &s1)), (&ck, &sk)) in rows.zip(ck.iter().zip(sk)) {
                    (*sn, *cn) = next_harmonic((sk, ck), (s1, c1));
                }
            }
        }

        let mut gram = [0.0f64; MAX_COLS * MAX_COLS];
        gram_lower(&scratch.x[..cols * n], n, cols, &mut gram);
        // Only the lower triangles are filled: they are all `cholesky_solve` reads.
        let mut xtx = [0.0f64; MAX_FEATURES * MAX_FEATURES];
        let mut xty = [0.0f64; MAX_FEATURES];
        for i in 0..p {
            xtx[i * p..=i * p + i].copy_from_slice(&gram[i * cols..=i * cols + i]);
            xty[i] = gram[p * cols + i];
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
            // XᵀWX = XᵀX − Σ (1 − wᵢ) xᵢxᵢᵀ over the down-weighted rows only (Huber weights are
            // 1 inside the limit): about a fifth of the rows on Gaussian noise.
            let limit = config.huber_k * scale;
            let (rows, d) = (&mut scratch.out_rows, &mut scratch.out_d);
            // Without a branch per row: which rows are out is a coin toss the predictor loses.
            rows.resize(n, 0);
            let mut m = 0;
            for (i, r) in scratch.r.iter().enumerate() {
                rows[m] = i;
                // Written as "not inside", so that a NaN residual counts as out, as it always has.
                let inside = r.abs() <= limit;
                m += usize::from(!inside);
            }
            rows.truncate(m);
            d.clear();
            d.extend(rows.iter().map(|&i| 1.0 - limit / scratch.r[i].abs()));
            let (mut a, mut b) = (xtx, xty);
            downdate(&scratch.x[..cols * n], n, p, rows, d, &mut a, &mut b);
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

    /// Appends `v − predict(t)` of each sample to `out`, in order: what [`predict`] would give
    /// (within ~1e-14 of the prediction's magnitude), but cheaper for a run of samples at a
    /// regular step, whose seasonal angles are advanced by rotation instead of two `sin_cos` per
    /// sample (exact ones every 64 samples bound the drift).
    ///
    /// The samples are taken in blocks: the angles of a block first (a sequential recurrence),
    /// then each feature for the whole block at once, which vectorises. Each prediction still
    /// sums its terms in [`predict`]'s order.
    ///
    /// [`predict`]: SeasonalBaseline::predict
    pub fn residuals<'a>(&self, samples: impl IntoIterator<Item = &'a Sample>, out: &mut Vec<f64>) {
        const B: usize = 64;
        let s = self.seasonality;
        let mut rows = Rows::new(s, self.t0, self.span_ms);
        let mut samples = samples.into_iter();
        let (mut v, mut trend) = ([0.0f64; B], [0.0f64; B]);
        // (sin, cos) of the daily and weekly angle of each sample of the block.
        let mut fundamentals = [[[0.0f64; B]; 2]; 2];
        loop {
            let mut m = 0;
            for smp in samples.by_ref().take(B) {
                let (tr, angles) = rows.next(smp.t);
                (v[m], trend[m]) = (smp.v, tr);
                for (f, (sin, cos)) in fundamentals.iter_mut().zip(angles) {
                    (f[0][m], f[1][m]) = (sin, cos);
                }
                m += 1;
            }
            if m == 0 {
                return;
            }
            let mut y = [0.0f64; B];
            let y = &mut y[..m];
            for (y, tr) in y.iter_mut().zip(&trend[..m]) {
                *y += self.coef[0] * 1.0;
                *y += self.coef[1] * tr;
            }
            let mut j = 2;
            for (harmonics, [s1, c1]) in [s.daily, s.weekly].into_iter().zip(&fundamentals) {
                let (mut sk, mut ck) = (*s1, *c1);
                let first = s1[..m].iter().zip(&c1[..m]);
                for _ in 0..harmonics {
                    let (a, b) = (self.coef[j], self.coef[j + 1]);
                    let kth = sk[..m].iter_mut().zip(&mut ck[..m]);
                    for ((y, (sk, ck)), (&s1, &c1)) in y.iter_mut().zip(kth).zip(first.clone()) {
                        *y += a * *ck;
                        *y += b * *sk;
                        (*sk, *ck) = next_harmonic((*sk, *ck), (s1, c1));
                    }
                    j += 2;
                }
            }
            out.extend(v[..m].iter().zip(&*y).map(|(v, y)| v - y));
        }
    }

    /// The intercept and trend alone at `t`: the prediction without its seasonality (cheap: no
    /// `sin_cos`).
    #[inline]
    pub fn trend(&self, t: Timestamp) -> f64 {
        self.coef[0] + self.coef[1] * t.millis_since(self.t0) as f64 / self.span_ms
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

/// Subtracts `Σ dᵢ xᵢxᵢᵀ` from the lower triangle of `a` (`p × p`) and `Σ dᵢ yᵢ xᵢ` from `b`,
/// over the rows `rows` of the column-major `[X | y]` in `x` (`n` rows), in that order.
///
/// Every entry gets exactly the operations of one rank-one update per row in turn,
/// `a[j][k] -= (dᵢ·xᵢⱼ)·xᵢₖ`, so the result is the same to the bit however the work is grouped.
/// It is grouped by four rows: each entry is loaded and stored once per four rows instead of
/// once per row, and a row of the triangle is a contiguous slice, which vectorises.
fn downdate(
    x: &[f64],
    n: usize,
    p: usize,
    rows: &[usize],
    d: &[f64],
    a: &mut [f64],
    b: &mut [f64],
) {
    let cols = p + 1;
    let mut xs = [[0.0f64; MAX_COLS]; 4];
    for (group, dg) in rows.chunks(4).zip(d.chunks(4)) {
        for (xq, &i) in xs.iter_mut().zip(group) {
            for (j, v) in xq[..cols].iter_mut().enumerate() {
                *v = x[j * n + i];
            }
        }
        if let ([x0, x1, x2, x3], &[d0, d1, d2, d3]) = (&xs, dg) {
            for j in 0..p {
                let (e0, e1, e2, e3) = (d0 * x0[j], d1 * x1[j], d2 * x2[j], d3 * x3[j]);
                let four = x0[..=j]
                    .iter()
                    .zip(&x1[..=j])
                    .zip(x2[..=j].iter().zip(&x3[..=j]));
                for (a, ((x0, x1), (x2, x3))) in a[j * p..=j * p + j].iter_mut().zip(four) {
                    *a = *a - e0 * x0 - e1 * x1 - e2 * x2 - e3 * x3;
                }
                b[j] = b[j] - e0 * x0[p] - e1 * x1[p] - e2 * x2[p] - e3 * x3[p];
            }
        } else {
            for (xq, &dq) in xs.iter().zip(dg) {
                for j in 0..p {
                    let e = dq * xq[j];
                    for (a, xk) in a[j * p..=j * p + j].iter_mut().zip(&xq[..=j]) {
                        *a -= e * xk;
                    }
                    b[j] -= e * xq[p];
                }
            }
        }
    }
}

/// Fills `scratch.r` with the residuals of `coef` and returns their robust standard deviation
/// (1.4826 × the median absolute residual).
fn residual_scale(scratch: &mut FitScratch, p: usize, n: usize, coef: &[f64]) -> f64 {
    let x = &scratch.x[..(p + 1) * n];
    let (r, abs) = (&mut scratch.r, &mut scratch.abs);
    r.resize(n, 0.0);
    abs.resize(n, 0.0);
    // Eight rows at a time, held in registers while every column is subtracted in turn: each
    // residual gets the operations `y − c₀x₀ − c₁x₁ − …` in that order, as column-by-column
    // passes over the whole vector would give it, without storing and reloading it per column.
    let whole = n - n % 8;
    for start in (0..whole).step_by(8) {
        let mut acc = [0.0f64; 8];
        acc.copy_from_slice(&x[p * n + start..p * n + start + 8]);
        for (j, &c) in coef[..p].iter().enumerate() {
            for (a, xj) in acc.iter_mut().zip(&x[j * n + start..j * n + start + 8]) {
                *a -= c * xj;
            }
        }
        r[start..start + 8].copy_from_slice(&acc);
        for (a, v) in abs[start..start + 8].iter_mut().zip(acc) {
            *a = v.abs();
        }
    }
    for i in whole..n {
        let mut v = x[p * n + i];
        for (j, &c) in coef[..p].iter().enumerate() {
            v -= c * x[j * n + i];
        }
        r[i] = v;
        abs[i] = v.abs();
    }
    1.4826 * median_of_magnitudes(abs)
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

    /// The fit as first written: per-row features, `XᵀX` by whole-column dot products, a
    /// scalar rank-one downdate per row. The faster fit must agree with it to the bit.
    fn reference_fit(config: &SeasonalConfig, history: &[Sample]) -> SeasonalBaseline {
        fn dot(a: &[f64], b: &[f64]) -> f64 {
            let n = a.len().min(b.len());
            let mut acc = [0.0f64; 8];
            for c in 0..n / 8 {
                for k in 0..8 {
                    acc[k] += a[c * 8 + k] * b[c * 8 + k];
                }
            }
            let mut tail = 0.0;
            for i in n / 8 * 8..n {
                tail += a[i] * b[i];
            }
            (acc[0] + acc[4]) + (acc[1] + acc[5]) + (acc[2] + acc[6]) + (acc[3] + acc[7]) + tail
        }
        fn scale_of(x: &[f64], y: &[f64], p: usize, coef: &[f64], r: &mut Vec<f64>) -> f64 {
            let n = y.len();
            r.clear();
            r.extend_from_slice(y);
            for j in 0..p {
                for (r, x) in r.iter_mut().zip(&x[j * n..(j + 1) * n]) {
                    *r -= coef[j] * x;
                }
            }
            let mut abs: Vec<f64> = r.iter().map(|r| r.abs()).collect();
            let mid = abs.len() / 2;
            1.4826 * *abs.select_nth_unstable_by(mid, f64::total_cmp).1
        }
        let s = config.seasonality;
        let p = s.features();
        let finite: Vec<Sample> = history.iter().copied().filter(Sample::is_finite).collect();
        let n = finite.len();
        let t0 = finite[0].t;
        let span_ms = (finite[n - 1].t.millis_since(t0) as f64).max(1.0);
        let y: Vec<f64> = finite.iter().map(|s| s.v).collect();
        let mut x = vec![0.0; p * n];
        let mut row = [0.0f64; MAX_FEATURES];
        for (i, smp) in finite.iter().enumerate() {
            features(s, t0, span_ms, smp.t, &mut row);
            for j in 0..p {
                x[j * n + i] = row[j];
            }
        }
        let col = |j: usize| &x[j * n..(j + 1) * n];
        let mut xtx = [0.0f64; MAX_FEATURES * MAX_FEATURES];
        let mut xty = [0.0f64; MAX_FEATURES];
        for i in 0..p {
            for j in 0..=i {
                xtx[i * p + j] = dot(col(i), col(j));
                xtx[j * p + i] = xtx[i * p + j];
            }
            xty[i] = dot(col(i), &y);
        }
        let mut coef = xty;
        assert!(cholesky_solve(&xtx, p, &mut coef));
        let mut r = Vec::new();
        let mut scale = scale_of(&x, &y, p, &coef, &mut r);
        for _ in 0..config.iterations {
            if scale.is_nan() || scale <= 0.0 {
                break;
            }
            let (mut a, mut b) = (xtx, xty);
            let limit = config.huber_k * scale;
            for i in 0..n {
                if r[i].abs() <= limit {
                    continue;
                }
                let d = 1.0 - limit / r[i].abs();
                for j in 0..p {
                    row[j] = x[j * n + i];
                }
                for j in 0..p {
                    let dj = d * row[j];
                    for k in 0..=j {
                        a[j * p + k] -= dj * row[k];
                    }
                    b[j] -= dj * y[i];
                }
            }
            if !cholesky_solve(&a, p, &mut b) {
                break;
            }
            coef = b;
            scale = scale_of(&x, &y, p, &coef, &mut r);
        }
        SeasonalBaseline {
            seasonality: s,
            t0,
            span_ms,
            coef,
            scale,
        }
    }

    #[test]
    fn the_fit_is_the_reference_fit_to_the_bit() {
        // Regular steps with an incident and unusable samples, an odd length (tails of the
        // blocked sums), irregular steps, and each seasonality; robust and least squares.
        let mut incident = week(truth, 60_000, 10_081);
        for (i, s) in incident.iter_mut().enumerate() {
            s.v += 3.0 * ((i * 7919 % 1000) as f64 / 1000.0 - 0.5);
            if (4000..4300).contains(&i) {
                s.v += 50.0;
            }
        }
        incident[17].v = f64::NAN;
        let irregular: Vec<Sample> = (0..3001i64)
            .map(|i| {
                let t = 1_700_000_000_000 + i * 300_000 + (i * i * 7) % 90_000;
                Sample::new(Timestamp::from_millis(t), truth(t) + ((i * 31) % 17) as f64)
            })
            .collect();
        for h in [&incident, &irregular] {
            for seasonality in [Seasonality::FULL, Seasonality::DAILY, Seasonality::NONE] {
                for iterations in [0, 3] {
                    let config = SeasonalConfig {
                        seasonality,
                        iterations,
                        ..SeasonalConfig::default()
                    };
                    let fast = SeasonalBaseline::fit(&config, h).unwrap();
                    let reference = reference_fit(&config, h);
                    let bits = |m: &SeasonalBaseline| m.coef.map(f64::to_bits);
                    assert_eq!(bits(&fast), bits(&reference), "{config:?}");
                    assert_eq!(fast.scale.to_bits(), reference.scale.to_bits());
                    assert_eq!(fast, reference);
                }
            }
        }
    }

    #[test]
    fn batch_residuals_are_predictions() {
        let regular = week(truth, 15_000, 20_000);
        let mut jittered = regular.clone();
        for (i, s) in jittered.iter_mut().enumerate() {
            s.t = s.t.add_millis((i as i64 * 7) % 3);
        }
        let m = SeasonalBaseline::fit(&SeasonalConfig::default(), &regular[..10_000]).unwrap();
        for h in [&regular, &jittered] {
            let mut r = Vec::new();
            m.residuals(h.iter(), &mut r);
            assert_eq!(r.len(), h.len());
            for (s, r) in h.iter().zip(&r) {
                let exact = s.v - m.predict(s.t);
                assert!((r - exact).abs() < 1e-11, "{r} vs {exact}");
            }
        }
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
