//! Model selection from history: which seasonality a series has, and how fast its level moves.
//!
//! The test is the one that matters for detection: does a candidate predict the *next* sample
//! better? For each candidate baseline (none, daily, daily + weekly; a seasonal one only once
//! the history holds two full cycles) and each smoothing factor of the online level, the
//! one-step-ahead errors are replayed over the history, and the smallest mean absolute error
//! wins. A seasonal candidate must beat the best non-seasonal one by a clear margin, so that a
//! wandering level is not mistaken for seasonality.

use portent_core::{FitError, Sample};
use serde::{Deserialize, Serialize};

use crate::seasonal::{DAY_MS, FitScratch, SeasonalBaseline, SeasonalConfig, Seasonality, WEEK_MS};

/// The outcome of model selection.
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    /// Seasonal components in use.
    pub seasonality: Seasonality,
    /// Smoothing factor of the online level, in (0, 1].
    pub alpha: f64,
}

impl Default for Selection {
    /// Before any fit: no seasonality, a level that moves moderately.
    fn default() -> Self {
        Self {
            seasonality: Seasonality::NONE,
            alpha: 0.1,
        }
    }
}

/// Smoothing factors tried for the online level.
const ALPHAS: [f64; 6] = [0.01, 0.03, 0.1, 0.3, 0.6, 1.0];
/// How much smaller a seasonal candidate's error must be to be preferred.
const SEASONAL_MARGIN: f64 = 0.9;
/// Usable samples needed before anything is selected.
const MIN_SAMPLES: usize = 48;

/// Chooses seasonality and level smoothing for a series from its history.
pub fn select_model(history: &[Sample]) -> Result<(Selection, Option<SeasonalBaseline>), FitError> {
    let finite: Vec<Sample> = history.iter().copied().filter(Sample::is_finite).collect();
    if finite.len() < MIN_SAMPLES {
        return Err(FitError::NotEnoughData {
            needed: MIN_SAMPLES,
            got: finite.len(),
        });
    }
    let span = finite[finite.len() - 1].t.millis_since(finite[0].t);
    let mut candidates = vec![Seasonality::NONE];
    if span >= 2 * DAY_MS {
        candidates.push(Seasonality::DAILY);
    }
    if span >= 2 * WEEK_MS {
        candidates.push(Seasonality::FULL);
    }

    let mut scratch = FitScratch::default();
    let mut residual = Vec::with_capacity(finite.len());
    let mut best: Option<(f64, Selection, Option<SeasonalBaseline>)> = None;
    for seasonality in candidates {
        let baseline = if seasonality.is_seasonal() {
            let config = SeasonalConfig {
                seasonality,
                ..SeasonalConfig::default()
            };
            match SeasonalBaseline::fit_with(&config, &finite, &mut scratch) {
                Ok(b) => Some(b),
                Err(_) => continue,
            }
        } else {
            None
        };
        residual.clear();
        residual.extend(
            finite
                .iter()
                .map(|s| s.v - baseline.map_or(0.0, |b| b.predict(s.t))),
        );
        for alpha in ALPHAS {
            let mut err = one_step_error(&residual, alpha);
            if seasonality.is_seasonal() {
                err /= SEASONAL_MARGIN;
            }
            if best.as_ref().is_none_or(|(e, ..)| err < *e) {
                best = Some((err, Selection { seasonality, alpha }, baseline));
            }
        }
    }
    let (_, selection, baseline) = best.ok_or(FitError::NotEnoughData {
        needed: MIN_SAMPLES,
        got: finite.len(),
    })?;
    Ok((selection, baseline))
}

/// Mean absolute one-step-ahead error of an exponentially smoothed level over `r`, after a
/// burn-in of a tenth of the samples.
fn one_step_error(r: &[f64], alpha: f64) -> f64 {
    let burn = r.len() / 10;
    let mut level = r[0];
    let mut sum = 0.0;
    for (i, &x) in r.iter().enumerate().skip(1) {
        let e = x - level;
        if i >= burn {
            sum += e.abs();
        }
        level += alpha * e;
    }
    sum / (r.len() - burn.max(1)) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use portent_core::Timestamp;
    use std::f64::consts::TAU;

    fn series(n: i64, step_ms: i64, mut f: impl FnMut(i64, i64) -> f64) -> Vec<Sample> {
        (0..n)
            .map(|i| {
                let t = 1_600_000_000_000 + i * step_ms;
                Sample::new(Timestamp::from_millis(t), f(i, t))
            })
            .collect()
    }

    /// A deterministic pseudo-random number in [-0.5, 0.5).
    fn noise(i: i64) -> f64 {
        // splitmix64: independent draws, unlike a plain multiplicative sequence.
        let mut z = (i as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    }

    #[test]
    fn finds_daily_seasonality() {
        let h = series(288 * 7, 300_000, |i, t| {
            10.0 * (TAU * (t % DAY_MS) as f64 / DAY_MS as f64).sin() + noise(i)
        });
        let (sel, base) = select_model(&h).unwrap();
        assert_eq!(sel.seasonality, Seasonality::DAILY);
        assert!(base.is_some());
        assert!(sel.alpha <= 0.1, "{sel:?}");
    }

    #[test]
    fn white_noise_has_no_seasonality_and_a_slow_level() {
        let h = series(288 * 7, 300_000, |i, _| 5.0 + noise(i));
        let (sel, base) = select_model(&h).unwrap();
        assert_eq!(sel.seasonality, Seasonality::NONE);
        assert!(base.is_none());
        assert_eq!(sel.alpha, 0.01);
    }

    #[test]
    fn a_random_walk_gets_a_fast_level() {
        let mut x = 0.0;
        let h = series(2000, 60_000, |i, _| {
            x += noise(i);
            x
        });
        let (sel, _) = select_model(&h).unwrap();
        assert!(sel.alpha >= 0.6, "{sel:?}");
    }

    #[test]
    fn short_history_is_an_error() {
        let h = series(10, 60_000, |_, _| 1.0);
        assert!(matches!(
            select_model(&h),
            Err(FitError::NotEnoughData {
                needed: 48,
                got: 10
            })
        ));
    }
}
