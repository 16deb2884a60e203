//! Multivariate detection: one score for a row of time-aligned metrics of one entity.
//!
//! A pod's CPU, memory, latency and error rate can each look normal while their combination
//! does not: memory and latency both up while traffic is flat breaks the correlation that
//! traffic normally imposes on them. The models here score such rows:
//!
//! * [`IsolationForest`] (Liu, Ting and Zhou, 2008): how quickly random axis-parallel splits
//!   isolate the row from the training window, splitting each feature's residual from the
//!   others so that a broken correlation shows;
//! * [`Autoencoder`]: how badly a small neural network that compresses and reconstructs the
//!   training rows reconstructs this one.
//!
//! Both are seeded and deterministic, fit on a rolling window of rows (the caller passes the
//! window; the models keep at most their configured `window` most recent rows of it), survive a
//! few percent of anomalies in that window (they fit, drop the rows that score worst, and fit
//! again), serialise exactly, and say how much each feature contributed to a row's score.
//! Their raw scores are calibrated into the workspace's `anomaly_score` convention by
//! [`Calibration`]; [`combine`] merges a row's score with the entity's univariate scores.
//!
//! On seeded pod-like data (tests in this module) both models score a row that breaks a
//! correlation at 0.8 or more, although each of its values is exceeded by more than 5% of the
//! training rows, and a week of clean held-out rows crosses 0.8 at most once a day (measured:
//! 0 and 2 rows in 10,080). Fitting on a week of minutes of four features takes about 50 ms
//! (forest) and 160 ms (autoencoder); scoring a row about 10 µs and 0.6 µs
//! (`benches/multivariate.rs`).
//!
//! ```
//! use portent_models::multivariate::{FeatureSet, IsolationForestConfig, ScoreRows};
//!
//! let schema = FeatureSet::new(["memory", "latency"]).unwrap();
//! // Memory and latency both follow traffic.
//! let rows: Vec<[f64; 2]> = (0..2000)
//!     .map(|i| {
//!         let traffic = 1.0 + (i as f64 * 0.01).sin() * 0.5;
//!         let noise = portent_core::seeded::gauss(i) * 0.01;
//!         [100.0 * traffic + noise, 20.0 * traffic - noise]
//!     })
//!     .collect();
//! let forest = IsolationForestConfig::default().fit(schema, &rows).unwrap();
//! // High memory with low latency: each within its usual range, together never seen.
//! let row = forest.score_row(&[140.0, 12.0]).unwrap();
//! assert!(row.score.get() >= 0.8);
//! assert!(forest.score_row(&[100.0, 20.0]).unwrap().score.get() < 0.5);
//! ```

mod autoencoder;
mod isolation_forest;
mod scaling;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;

use portent_core::{FitError, Score, seeded};
use serde::{Deserialize, Serialize};

pub use autoencoder::{Autoencoder, AutoencoderConfig};
pub use isolation_forest::{IsolationForest, IsolationForestConfig};
pub use scaling::RobustScaler;

use crate::detector::calibrate;

/// A feature schema was invalid, or a row did not fit its schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeatureError {
    /// A schema needs at least one feature.
    #[error("features: at least one feature is needed")]
    Empty,
    /// A feature name was empty.
    #[error("features: feature {0} has an empty name")]
    EmptyName(usize),
    /// Two features had the same name.
    #[error("features: {0:?} appears more than once")]
    Duplicate(String),
    /// A row had a different number of values than the schema has features.
    #[error("features: row has {got} values, the schema has {expected} features")]
    Width {
        /// The schema's width.
        expected: usize,
        /// The row's width.
        got: usize,
    },
}

/// The names of the features in each row, in order: a non-empty list of unique, non-empty
/// names. Every row scored against a model has exactly this many values, in this order.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct FeatureSet(Vec<String>);

impl FeatureSet {
    /// A schema of these feature names.
    pub fn new<I, S>(names: I) -> Result<Self, FeatureError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let names: Vec<String> = names.into_iter().map(Into::into).collect();
        if names.is_empty() {
            return Err(FeatureError::Empty);
        }
        let mut seen = BTreeSet::new();
        for (i, n) in names.iter().enumerate() {
            if n.is_empty() {
                return Err(FeatureError::EmptyName(i));
            }
            if !seen.insert(n.as_str()) {
                return Err(FeatureError::Duplicate(n.clone()));
            }
        }
        Ok(Self(names))
    }

    /// How many features a row has.
    pub fn width(&self) -> usize {
        self.0.len()
    }

    /// The feature names, in row order.
    pub fn names(&self) -> &[String] {
        &self.0
    }

    /// The position of the feature called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.0.iter().position(|n| n == name)
    }

    /// `Ok` if `row` has one value per feature.
    pub fn check(&self, row: &[f64]) -> Result<(), FeatureError> {
        if row.len() == self.width() {
            Ok(())
        } else {
            Err(FeatureError::Width {
                expected: self.width(),
                got: row.len(),
            })
        }
    }
}

impl TryFrom<Vec<String>> for FeatureSet {
    type Error = FeatureError;
    fn try_from(names: Vec<String>) -> Result<Self, FeatureError> {
        Self::new(names)
    }
}

impl From<FeatureSet> for Vec<String> {
    fn from(f: FeatureSet) -> Vec<String> {
        f.0
    }
}

/// What a multivariate model says about one row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RowScore {
    /// How unusual the row is, calibrated like every `anomaly_score`.
    pub score: Score,
    /// The model's own score before calibration (higher is more unusual); NaN for a missing
    /// row.
    pub raw: f64,
    /// Each feature's share of the score, in schema order, summing to 1 (all zero for a
    /// missing row).
    pub contributions: Vec<f64>,
    /// Whether the row had a NaN or infinite value and so could not be scored.
    pub missing: bool,
}

impl RowScore {
    /// The verdict on a row with a NaN or infinite value: no evidence, no anomaly.
    pub fn missing(width: usize) -> Self {
        Self {
            score: Score::ZERO,
            raw: f64::NAN,
            contributions: vec![0.0; width],
            missing: true,
        }
    }

    /// The index of the feature that contributed most, if any did.
    pub fn top_feature(&self) -> Option<usize> {
        top_index(&self.contributions)
    }
}

/// A fitted multivariate model: scores rows of its [`FeatureSet`].
pub trait ScoreRows {
    /// The features a row must have, in order.
    fn schema(&self) -> &FeatureSet;

    /// Scores one row. A row with a NaN or infinite value scores as [`RowScore::missing`]; only
    /// a row of the wrong width is an error.
    fn score_row(&self, row: &[f64]) -> Result<RowScore, FeatureError>;

    /// Scores many rows, as [`ScoreRows::score_row`] would one by one (bit for bit), but
    /// possibly faster: the Isolation Forest walks each tree for every row in turn, so that the
    /// tree stays in cache.
    fn score_rows<R: AsRef<[f64]>>(&self, rows: &[R]) -> Result<Vec<RowScore>, FeatureError>
    where
        Self: Sized,
    {
        rows.iter().map(|r| self.score_row(r.as_ref())).collect()
    }
}

/// The index of the largest positive value.
fn top_index(v: &[f64]) -> Option<usize> {
    v.iter()
        .enumerate()
        .filter(|(_, c)| **c > 0.0)
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
}

/// Scales non-negative weights to sum to 1; all zero (or non-finite) stays all zero.
fn normalise(v: &mut [f64]) {
    let total: f64 = v.iter().sum();
    if total.is_finite() && total > 0.0 {
        v.iter_mut().for_each(|x| *x /= total);
    } else {
        v.iter_mut().for_each(|x| *x = 0.0);
    }
}

/// The usable rows of a training window: its last `window` rows, without those holding a NaN
/// or infinite value. Fails on a row of the wrong width or when fewer than `needed` remain.
fn usable_rows<'a, R: AsRef<[f64]>>(
    schema: &FeatureSet,
    rows: &'a [R],
    window: usize,
    needed: usize,
) -> Result<Vec<&'a [f64]>, FitError> {
    let start = rows.len().saturating_sub(window);
    let mut out = Vec::with_capacity(rows.len() - start);
    for r in &rows[start..] {
        let r = r.as_ref();
        schema
            .check(r)
            .map_err(|e| FitError::Config(e.to_string()))?;
        if r.iter().all(|v| v.is_finite()) {
            out.push(r);
        }
    }
    if out.len() < needed {
        return Err(FitError::NotEnoughData {
            needed,
            got: out.len(),
        });
    }
    Ok(out)
}

/// The rows left after dropping the `fraction` whose `raw` score is highest (ties broken by
/// position, so the choice is deterministic). Keeps the original order.
fn trim<'a>(rows: &[&'a [f64]], raw: &[f64], fraction: f64) -> Vec<&'a [f64]> {
    let drop = (rows.len() as f64 * fraction).floor() as usize;
    if drop == 0 {
        return rows.to_vec();
    }
    let mut order: Vec<usize> = (0..rows.len()).collect();
    // The `drop` first in this total order, by selection: which rows they are does not
    // depend on how the rest are ordered.
    let worst_first = |&a: &usize, &b: &usize| raw[b].total_cmp(&raw[a]).then(a.cmp(&b));
    if drop < order.len() {
        order.select_nth_unstable_by(drop, worst_first);
    }
    let mut keep = vec![true; rows.len()];
    for &i in &order[..drop.min(rows.len())] {
        keep[i] = false;
    }
    rows.iter()
        .zip(keep)
        .filter_map(|(r, k)| k.then_some(*r))
        .collect()
}

/// The contamination must stay below the calibration's last knot (exceedance 0.05), which it
/// sets aside.
fn check_contamination(c: f64) -> Result<(), FitError> {
    if (0.0..=0.05).contains(&c) {
        Ok(())
    } else {
        Err(FitError::Config(format!(
            "contamination: must be in [0, 0.05], got {c}"
        )))
    }
}

/// A seeded stream of uniform draws: `portent_core::seeded::uniform` at consecutive indices
/// from a start spread out by the seed and a stream number (one per tree, one per training
/// phase), so that streams never meet in practice.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03))
    }

    fn uniform(&mut self) -> f64 {
        let u = seeded::uniform(self.0);
        self.0 = self.0.wrapping_add(1);
        u
    }

    /// Uniform in `0..n`, for `n >= 1`.
    fn below(&mut self, n: usize) -> usize {
        ((self.uniform() * n as f64) as usize).min(n.saturating_sub(1))
    }
}

/// The surprise at which a row scores [`Score::ALERT`]: one clean row in 10,000, about once a
/// week at one-minute steps.
///
/// The univariate detector alerts at 4.5 ([`crate::detector::ALERT_SURPRISE`]) because it
/// judges each sample on several kinds of evidence at once, each with its own chance of a false
/// alarm; a row here is judged on one statistic. The exponential tail is conservative for both
/// models' statistics (their far tails are lighter), so clean rows cross it less often still:
/// see the false-positive test.
pub const ROW_ALERT_SURPRISE: f64 = 4.0;

/// The exceedance probabilities at which the bulk of the raw-score distribution is pinned.
const KNOT_EXCEEDANCE: [f64; 5] = [1.0, 0.5, 0.2, 0.1, 0.05];

/// Maps a model's raw score into a calibrated [`Score`], from the raw scores of its training
/// rows.
///
/// The top `trimmed` fraction of the training scores is set aside as presumed anomalies (the
/// rows the model dropped before its final fit), and the rest is taken as the clean
/// distribution. Whether those rows were anomalies or the clean distribution's own top
/// `trimmed`, the exceedance probability of any score below them comes out right either way;
/// only the far tail is extrapolated:
///
/// * the bulk is the empirical distribution: scores at exceedance probabilities 1, ½, 0.2, 0.1
///   and 0.05 are kept as knots, and the *surprise* (`−log10` of the exceedance probability) is
///   interpolated linearly between them;
/// * above the 95th percentile `u`, the excess is modelled as exponential, as in the univariate
///   tail model ([`crate::tail`]): `P(X > x) = 0.05 · exp(−(x − u) / β)`, which extrapolates past
///   anything seen. `β = (q95 − q90) / ln 2`, the exponential's slope between the last two
///   knots: estimated below the anomalies, it cannot be stretched by them.
///
/// The surprise then goes through the workspace's [`calibrate`], rescaled so that a row scores
/// [`Score::ALERT`] at a surprise of [`ROW_ALERT_SURPRISE`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// `(raw, surprise)`, raw non-decreasing.
    knots: Vec<(f64, f64)>,
    beta: f64,
}

impl Calibration {
    /// Learns the distribution of `raw` (finite values only; NaN is ignored), setting aside
    /// its top `trimmed` fraction (at most 0.05).
    pub fn fit(raw: &[f64], trimmed: f64) -> Self {
        let mut sorted: Vec<f64> = raw.iter().copied().filter(|x| x.is_finite()).collect();
        sorted.sort_by(f64::total_cmp);
        let drop = (sorted.len() as f64 * trimmed.clamp(0.0, 0.05)).floor() as usize;
        sorted.truncate(sorted.len() - drop);
        if sorted.is_empty() {
            return Self {
                knots: vec![(0.0, 0.0)],
                beta: 1.0,
            };
        }
        let knots: Vec<(f64, f64)> = KNOT_EXCEEDANCE
            .iter()
            .map(|&p| (quantile_sorted(&sorted, 1.0 - p), -p.log10()))
            .collect();
        let k = knots.len();
        let slope = (knots[k - 1].0 - knots[k - 2].0)
            / ((knots[k - 1].1 - knots[k - 2].1) / std::f64::consts::LOG10_E);
        // A floor, so that a window of identical rows still gives a usable (steep) tail.
        let floor = 1e-9 * knots[k - 1].0.abs().max(1e-9);
        Self {
            knots,
            beta: slope.max(floor),
        }
    }

    /// `−log10` of the estimated probability that a clean row scores at least `raw`.
    pub fn surprise(&self, raw: f64) -> f64 {
        if raw.is_nan() {
            return 0.0;
        }
        let (u, su) = self.knots[self.knots.len() - 1];
        if raw >= u {
            return su + (raw - u) / self.beta * std::f64::consts::LOG10_E;
        }
        // The last knot at or below `raw`; with ties, the one of highest surprise.
        let Some(k) = self.knots.iter().rposition(|&(x, _)| x <= raw) else {
            return 0.0;
        };
        let (x0, s0) = self.knots[k];
        let (x1, s1) = self.knots[k + 1];
        if x1 > x0 {
            s0 + (s1 - s0) * (raw - x0) / (x1 - x0)
        } else {
            s0
        }
    }

    /// The calibrated score of `raw`.
    pub fn score(&self, raw: f64) -> Score {
        let s = self.surprise(raw) * (crate::detector::ALERT_SURPRISE / ROW_ALERT_SURPRISE);
        Score::saturating(calibrate(s))
    }
}

/// Where the `q` quantile of `n` sorted values lies: the lower index and the fraction of the way
/// to the next.
fn quantile_at(n: usize, q: f64) -> (usize, f64) {
    let pos = q.clamp(0.0, 1.0) * (n - 1) as f64;
    let lo = pos.floor() as usize;
    (lo, pos - lo as f64)
}

/// The value `frac` of the way from `lo` to `hi`, as the quantiles interpolate.
fn lerp(lo: f64, hi: f64, frac: f64) -> f64 {
    lo + (hi - lo) * frac
}

/// The least of `s` by `f64::total_cmp`, or `or` if `s` is empty: the order statistic after
/// the one a selection placed just before `s`.
fn least(s: &[f64], or: f64) -> f64 {
    s.iter().copied().min_by(f64::total_cmp).unwrap_or(or)
}

/// [`quantile_sorted`] of `v` as if sorted by `f64::total_cmp`, found by selection (linear
/// time); reorders `v`. The same value to the last bit, as the order statistics are the same.
fn quantile_select(v: &mut [f64], q: f64) -> f64 {
    let (lo, frac) = quantile_at(v.len(), q);
    let (_, &mut at_lo, above) = v.select_nth_unstable_by(lo, f64::total_cmp);
    lerp(at_lo, least(above, at_lo), frac)
}

/// The first and third quartiles of non-empty `v`, each the same to the bit as
/// [`quantile_select`]'s, given `v` as `quantile_select(v, 0.5)` leaves it: partitioned around
/// its median. They are selected within the halves the median leaves, so the two cost about one
/// selection over `v`; and they are apart from the median because a robust scale rarely needs
/// them.
fn outer_quartiles(v: &mut [f64]) -> [f64; 2] {
    let n = v.len();
    let (m, _) = quantile_at(n, 0.5);
    let (below, rest) = v.split_at_mut(m);
    let Some((&mut mid, above)) = rest.split_first_mut() else {
        return [f64::NAN; 2]; // empty: the caller's contract is broken, and NaN says so
    };
    let (l, fl) = quantile_at(n, 0.25);
    let q1 = if l == m {
        lerp(mid, least(above, mid), fl)
    } else {
        let (_, &mut lo, rest) = below.select_nth_unstable_by(l, f64::total_cmp);
        lerp(lo, least(rest, mid), fl)
    };
    let (h, fh) = quantile_at(n, 0.75);
    let q3 = if h == m {
        lerp(mid, least(above, mid), fh)
    } else {
        let (_, &mut lo, rest) = above.select_nth_unstable_by(h - m - 1, f64::total_cmp);
        lerp(lo, least(rest, lo), fh)
    };
    [q1, q3]
}

/// The `q` quantile of sorted, non-empty `v`, interpolating linearly.
fn quantile_sorted(v: &[f64], q: f64) -> f64 {
    let (lo, frac) = quantile_at(v.len(), q);
    let hi = (lo + 1).min(v.len() - 1);
    lerp(v[lo], v[hi], frac)
}

/// An entity's verdict from its multivariate and univariate evidence together.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EntityScore {
    /// The combined score.
    pub score: Score,
    /// The multivariate model's score.
    pub multivariate: Score,
    /// The strongest univariate score.
    pub univariate: Score,
    /// Each feature's share of the combined score, in schema order, summing to 1 (all zero when
    /// both scores are zero).
    pub contributions: Vec<f64>,
}

impl EntityScore {
    /// The index of the feature that contributed most, if any did.
    pub fn top_feature(&self) -> Option<usize> {
        top_index(&self.contributions)
    }
}

/// Combines an entity's multivariate row score with the univariate scores of the same
/// features (in schema order) at the same time.
///
/// The rule is a noisy-OR of two pieces of evidence, the multivariate score `m` and the
/// *strongest* univariate score `u`: `1 − (1 − m)(1 − u)`. Either alone at 0.8 alerts; both
/// moderately unusual (0.6 each gives 0.84) alert together, which neither would alone. Only the
/// strongest univariate score counts, so that a group of many healthy metrics, each wiggling a
/// little, does not add up to an alert.
///
/// A feature's contribution is its multivariate share times `m`, plus its univariate score,
/// normalised to sum to 1. A missing multivariate row counts as `m = 0`.
pub fn combine(row: &RowScore, univariate: &[Score]) -> Result<EntityScore, FeatureError> {
    if univariate.len() != row.contributions.len() {
        return Err(FeatureError::Width {
            expected: row.contributions.len(),
            got: univariate.len(),
        });
    }
    let m = if row.missing { 0.0 } else { row.score.get() };
    let u = univariate.iter().map(|s| s.get()).fold(0.0, f64::max);
    let mut contributions: Vec<f64> = row
        .contributions
        .iter()
        .zip(univariate)
        .map(|(c, s)| c * m + s.get())
        .collect();
    normalise(&mut contributions);
    Ok(EntityScore {
        score: Score::saturating(1.0 - (1.0 - m) * (1.0 - u)),
        multivariate: Score::saturating(m),
        univariate: Score::saturating(u),
        contributions,
    })
}
