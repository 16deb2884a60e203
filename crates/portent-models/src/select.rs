//! Model selection from history: which seasonality a series has, and how fast its level moves.
//!
//! The test is the one that matters for detection: does a candidate predict the *next* sample
//! better? For each candidate baseline (none, daily, daily + weekly; a seasonal one only once
//! the history holds two full cycles) and each smoothing factor of the online level, the
//! one-step-ahead errors are replayed over the history, and the smallest mean absolute error
//! wins. A seasonal candidate must beat the best non-seasonal one by a clear margin, so that a
//! wandering level is not mistaken for seasonality.

use portent_core::{FitError, Sample, Timestamp};
use serde::{Deserialize, Serialize};

use crate::seasonal::{DAY_MS, FitScratch, SeasonalBaseline, SeasonalConfig, Seasonality, WEEK_MS};

/// The outcome of model selection.
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    /// Seasonal components in use.
    pub seasonality: Seasonality,
    /// Smoothing factor of the online level, in (0, 1].
    pub alpha: f64,
    /// The cycles evident in the values, whether or not the baseline uses them. A square
    /// wave (a nightly batch that runs for hours) is predicted one step ahead best by its last
    /// value, so `seasonality` may be none; yet its values at 9 AM and at 9 PM differ, and a
    /// 9 AM value that belongs to the night is a seasonality break.
    pub evident: Seasonality,
}

impl Default for Selection {
    /// Before any fit: no seasonality, a level that moves moderately.
    fn default() -> Self {
        Self {
            seasonality: Seasonality::NONE,
            alpha: 0.1,
            evident: Seasonality::NONE,
        }
    }
}

/// Smoothing factors tried for the online level.
const ALPHAS: [f64; 6] = [0.01, 0.03, 0.1, 0.3, 0.6, 1.0];
/// How much smaller a seasonal candidate's error must be to be preferred.
const SEASONAL_MARGIN: f64 = 0.9;
/// How much smaller a seasonal baseline's errors around a near-constant level (the slowest
/// smoothing) must be than the values' own, for its cycle to be evident (and its hours to get
/// ranges of their own). 0.75, not 0.6: a service's p99 latency that rises from 0.30 s at night
/// to 0.40 s by day, in noise of 0.02 s, explains 31% of its errors with its cycle; at 0.6 it
/// had no hours, so a latency creep to 0.46 s at 10 AM (0.35 s on the days before) was judged
/// against the day's peak only and flagged after about 140 minutes, at 0.75 after 65 (13 of 14
/// seeds of `eval sim`; 19 on the other; false alarms unchanged). NAB 67.93 / 56.18 / 73.74 -> 68.05 / 56.08 / 74.39; the
/// calibration tests' healthy alerts are unchanged. A random walk stays without a cycle.
const EVIDENT_RATIO: f64 = 0.75;
/// Usable samples needed before anything is selected.
const MIN_SAMPLES: usize = 48;
/// Usable samples up to which the baselines are fitted on the samples themselves. A week at one
/// minute (a fit of about a millisecond); more than any window of the NAB corpus holds (at most
/// 8,077 samples in 28 days), so NAB is fitted exactly as before this limit existed.
const MAX_RAW_FIT: usize = 10_080;
/// Time bins a longer history is summarised into before fitting (one more when its span is a
/// whole number of bins): for the engine's 28-day window, 10-minute bins. The shortest cycle the baseline models is the eighth daily harmonic
/// (3 h), 18 bins long, so averaging over a bin shrinks it by 0.5%.
const FIT_BINS: usize = 4_032;
/// The one-step-ahead errors are replayed over at most this many of the most recent usable
/// samples (all of them up to [`MAX_RAW_FIT`], so again NAB is unchanged).
const MAX_REPLAY: usize = 10_080;

/// The span of finite history [`select_model`] needs to consider `seasonality`: two of its
/// longest cycle.
pub fn span_to_consider(seasonality: Seasonality) -> i64 {
    if seasonality.weekly > 0 {
        2 * WEEK_MS
    } else if seasonality.daily > 0 {
        2 * DAY_MS
    } else {
        0
    }
}

/// The times of the first and the last finite sample of `history` (in time order); `None`
/// when it has none.
pub fn finite_bounds(history: &[Sample]) -> Option<(Timestamp, Timestamp)> {
    let mut usable = history.iter().filter(|s| s.is_finite());
    let first = usable.next()?.t;
    Some((first, usable.next_back().map_or(first, |last| last.t)))
}

/// Chooses seasonality and level smoothing for a series from its history (in time order).
///
/// The cost is bounded whatever the history's length, because the engine refits every series
/// daily on four weeks: at a 15 s scrape interval that is 161,000 samples, and fitting and
/// replaying them all took over 100 ms per refit (2.3 ms now). Beyond 10,080 usable
/// samples:
///
/// * the baselines are fitted on the history summarised into about 4,032 time bins of one
///   length, in whole minutes (10 minutes for four weeks), each the mean value at the mean
///   time of its samples. The seasonal shape and trend of four
///   weeks are as well determined by 4,032 points as by 161,000; the robust fit then
///   down-weights whole bins rather than single samples, and the baseline's residual scale is
///   that of bin means (the detector does not use it; its online scale is per sample);
/// * the one-step-ahead errors, which choose the level's smoothing and whether seasonality
///   pays, are replayed over the most recent 10,080 samples only: the level runs on
///   samples, so its smoothing has to be judged on samples, and the recent ones are those it
///   will run on next.
pub fn select_model(history: &[Sample]) -> Result<(Selection, Option<SeasonalBaseline>), FitError> {
    let usable = || history.iter().filter(|s| s.is_finite());
    let not_enough = |got| FitError::NotEnoughData {
        needed: MIN_SAMPLES,
        got,
    };
    let Some((first, last)) = finite_bounds(history) else {
        return Err(not_enough(0));
    };
    let span = last.millis_since(first);
    let candidates: Vec<Seasonality> = [Seasonality::NONE, Seasonality::DAILY, Seasonality::FULL]
        .into_iter()
        .filter(|&s| span >= span_to_consider(s))
        .collect();
    // A long history is summarised and counted in the same pass: a pass over four weeks at
    // 15 s (2.6 MB) costs about as much as the fits on the summary.
    let (n, binned) = if history.len() > MAX_RAW_FIT && candidates.len() > 1 {
        let (n, bins) = summarise(history, first, span, FIT_BINS);
        (n, (n > MAX_RAW_FIT).then_some(bins))
    } else {
        (usable().count(), None)
    };
    if n < MIN_SAMPLES {
        return Err(not_enough(n));
    }
    let fit_on = binned.as_deref().unwrap_or(history);
    let replay = most_recent(history, MAX_REPLAY);

    let mut scratch = FitScratch::default();
    let mut residual = Vec::with_capacity(n.min(MAX_REPLAY));
    let mut best: Option<(f64, Selection, Option<SeasonalBaseline>)> = None;
    // The slowest level's error for each candidate: how much of the values the cycle explains.
    let mut still: Vec<(Seasonality, f64)> = Vec::with_capacity(candidates.len());
    for seasonality in candidates {
        let baseline = if seasonality.is_seasonal() {
            let config = SeasonalConfig {
                seasonality,
                ..SeasonalConfig::default()
            };
            match SeasonalBaseline::fit_with(&config, fit_on, &mut scratch) {
                Ok(b) => Some(b),
                Err(_) => continue,
            }
        } else {
            None
        };
        residual.clear();
        let samples = replay.iter().filter(|s| s.is_finite());
        match baseline {
            Some(b) => b.residuals(samples, &mut residual),
            None => residual.extend(samples.map(|s| s.v)),
        }
        let errors = one_step_errors(&residual);
        still.push((seasonality, errors[0]));
        for (alpha, mut err) in ALPHAS.into_iter().zip(errors) {
            if seasonality.is_seasonal() {
                err /= SEASONAL_MARGIN;
            }
            if best.as_ref().is_none_or(|(e, ..)| err < *e) {
                let selection = Selection {
                    seasonality,
                    alpha,
                    evident: Seasonality::NONE,
                };
                best = Some((err, selection, baseline));
            }
        }
    }
    let (_, mut selection, baseline) = best.ok_or(not_enough(n))?;
    selection.evident = evident(&still);
    Ok((selection, baseline))
}

/// The richest cycle that explains the values around a slow level: its errors are under
/// [`EVIDENT_RATIO`] of no cycle's, and, for a richer one, under [`SEASONAL_MARGIN`] of the
/// simpler one's. `still` holds each candidate's slowest-level error, simplest first.
fn evident(still: &[(Seasonality, f64)]) -> Seasonality {
    let Some(&(_, flat)) = still.first() else {
        return Seasonality::NONE;
    };
    let mut found = (Seasonality::NONE, flat);
    for &(seasonality, err) in &still[1..] {
        let bar = if found.0.is_seasonal() {
            found.1 * SEASONAL_MARGIN
        } else {
            flat * EVIDENT_RATIO
        };
        if err < bar {
            found = (seasonality, err);
        }
    }
    found.0
}

/// How many usable samples `history` (in time order) holds, and those samples summarised into
/// spans of time of equal length from `t0`, `bins` of them over `span` ms (one more when `span`
/// is a whole number of them: the last sample then starts a span of its own): each span with
/// samples becomes one sample, their mean value at their mean time.
///
/// A span is a whole number of minutes (from one minute up), so that a series scraped at a
/// step that divides a minute has the same number of samples at the same offsets in every full
/// span: the summary then comes at a regular step, like the series, and the fit meets the same
/// phases of the day again and again (see the seasonal fit's `PhaseMemo`).
fn summarise(history: &[Sample], t0: Timestamp, span: i64, bins: usize) -> (usize, Vec<Sample>) {
    const MINUTE: u64 = 60_000;
    let width = (span.max(0) as u64).div_ceil(bins as u64);
    let width = width
        .div_ceil(MINUTE)
        .max(1)
        .saturating_mul(MINUTE)
        .min(i64::MAX as u64) as i64;
    let (mut usable, mut out) = (0, Vec::with_capacity(bins + 1));
    // The span being summed: where it starts and ends (ms since the epoch), its count, Σ ms
    // since its start, and Σ value in two halves, each sample added to one and the two
    // swapped, so that the additions form two chains of half the length. Samples come in time
    // order, so a span's samples are consecutive and its sums stay in registers: a sample only
    // compares its time with the span's bounds. (A sample out of order only starts a span
    // early: the summary gets longer, not wrong.)
    let (mut lo, mut hi) = (i64::MAX, i64::MIN);
    let (mut count, mut dt_sum, mut v_sums) = (0u32, 0u128, (0.0f64, 0.0f64));
    let mut flush = |lo: i64, count: u32, dt_sum: u128, (v0, v1): (f64, f64)| {
        if count > 0 {
            let count = f64::from(count);
            let dt = (dt_sum as f64 / count).round() as i64;
            out.push(Sample::new(
                Timestamp::from_millis(lo).add_millis(dt),
                (v0 + v1) / count,
            ));
        }
    };
    for s in history.iter().filter(|s| s.is_finite()) {
        let t = s.t.millis();
        if !(lo..hi).contains(&t) {
            flush(lo, count, dt_sum, v_sums);
            let start = s.t.millis_since(t0).div_euclid(width) * width;
            lo = t0.add_millis(start).millis();
            hi = lo.saturating_add(width);
            (count, dt_sum, v_sums) = (0, 0, (0.0, 0.0));
        }
        v_sums = (v_sums.1, v_sums.0 + s.v);
        count += 1;
        usable += 1;
        dt_sum += (t - lo) as u128; // in [0, width): no overflow, and a span's sum is exact
    }
    flush(lo, count, dt_sum, v_sums);
    (usable, out)
}

/// The shortest tail of `history` that holds `k` usable samples (all of it if it holds fewer).
fn most_recent(history: &[Sample], k: usize) -> &[Sample] {
    let mut seen = 0;
    for (i, s) in history.iter().enumerate().rev() {
        if s.is_finite() {
            seen += 1;
            if seen == k {
                return &history[i..];
            }
        }
    }
    history
}

/// Mean absolute one-step-ahead error of an exponentially smoothed level over `r`, after a
/// burn-in of a tenth of the samples, for each of [`ALPHAS`].
///
/// The six levels run side by side in one pass: six independent chains of dependent additions
/// instead of one at a time, with the same arithmetic for each alpha as alone.
fn one_step_errors(r: &[f64]) -> [f64; ALPHAS.len()] {
    let burn = r.len() / 10;
    let mut level = [r[0]; ALPHAS.len()];
    let mut sum = [0.0f64; ALPHAS.len()];
    let scored_from = burn.max(1).min(r.len());
    for &x in &r[1..scored_from] {
        for (level, alpha) in level.iter_mut().zip(ALPHAS) {
            *level += alpha * (x - *level);
        }
    }
    for &x in &r[scored_from..] {
        for ((level, sum), alpha) in level.iter_mut().zip(&mut sum).zip(ALPHAS) {
            let e = x - *level;
            *sum += e.abs();
            *level += alpha * e;
        }
    }
    sum.map(|s| s / (r.len() - burn.max(1)) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
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
        portent_core::seeded::uniform(i as u64) - 0.5
    }

    #[test]
    fn finds_daily_seasonality() {
        let h = series(288 * 7, 300_000, |i, t| {
            10.0 * (TAU * (t % DAY_MS) as f64 / DAY_MS as f64).sin() + noise(i)
        });
        let (sel, base) = select_model(&h).unwrap();
        assert_eq!(sel.seasonality, Seasonality::DAILY);
        assert_eq!(sel.evident, Seasonality::DAILY);
        assert!(base.is_some());
        assert!(sel.alpha <= 0.1, "{sel:?}");
    }

    #[test]
    fn white_noise_has_no_seasonality_and_a_slow_level() {
        let h = series(288 * 7, 300_000, |i, _| 5.0 + noise(i));
        let (sel, base) = select_model(&h).unwrap();
        assert_eq!(sel.seasonality, Seasonality::NONE);
        assert_eq!(sel.evident, Seasonality::NONE);
        assert!(base.is_none());
        assert_eq!(sel.alpha, 0.01);
    }

    #[test]
    fn a_random_walk_over_days_shows_no_cycle() {
        // A wandering level over a week: a daily fit follows some of it, but not enough for a
        // cycle to be evident (its hours would otherwise get ranges of their own).
        let mut x = 0.0;
        let h = series(288 * 7, 300_000, |i, _| {
            x += noise(i);
            x
        });
        let (sel, _) = select_model(&h).unwrap();
        assert_eq!(sel.evident, Seasonality::NONE, "{sel:?}");
    }

    #[test]
    fn a_square_wave_has_an_evident_cycle_though_its_last_value_predicts_it_best() {
        // A batch that runs from 9 to 17 every day, switching in one step.
        let h = series(288 * 7, 300_000, |i, t| {
            let hour = (t % DAY_MS) / 3_600_000;
            (if (9..17).contains(&hour) { 80.0 } else { 20.0 }) + 4.0 * noise(i)
        });
        let (sel, _) = select_model(&h).unwrap();
        assert_eq!(sel.evident, Seasonality::DAILY, "{sel:?}");
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
    fn a_long_history_is_fitted_on_bins_as_well_as_on_samples() {
        // Four weeks at one minute, 40,320 samples: the fit sees 4,032 bins of 10 minutes.
        let h = series(40_320, 60_000, |i, t| {
            let day = TAU * (t % DAY_MS) as f64 / DAY_MS as f64;
            let week = TAU * (t % WEEK_MS) as f64 / WEEK_MS as f64;
            500.0 + 200.0 * day.sin() + 50.0 * week.cos() + 10.0 * noise(i)
        });
        let (sel, binned) = select_model(&h).unwrap();
        assert_eq!(sel.seasonality, Seasonality::FULL);
        let config = SeasonalConfig {
            seasonality: sel.seasonality,
            ..SeasonalConfig::default()
        };
        let raw = SeasonalBaseline::fit(&config, &h).unwrap();
        let binned = binned.unwrap();
        for s in h.iter().step_by(997) {
            let gap = (binned.predict(s.t) - raw.predict(s.t)).abs();
            assert!(gap < 0.2, "{gap} at {}", s.t);
        }
    }

    #[test]
    fn bins_are_means_at_mean_times() {
        // Two days at 15 s into at most 100 bins: 1,727,851 ms each, rounded up to 29 minutes
        // of 116 samples. A gap of 400 samples empties two bins.
        let mut h = series(11_520, 15_000, |i, _| i as f64);
        h.retain(|s| !(4000..4400).contains(&(s.v as i64)));
        let t0 = h[0].t;
        let span = h[h.len() - 1].t.millis_since(t0);
        let (usable, bins) = summarise(&h, t0, span, 100);
        assert_eq!((usable, bins.len()), (11_120, 98));
        // The first bin: samples 0..116, mean 57.5 at 57.5 steps.
        assert_eq!(bins[0].v, 57.5);
        assert_eq!(bins[0].t.millis_since(t0), 862_500);
        // Full bins come at a regular step, which the fit's memo of phases relies on.
        assert_eq!(bins[1].t.millis_since(bins[0].t), 29 * 60_000);
        assert!(bins.windows(2).all(|w| w[0].t < w[1].t));
    }

    #[test]
    fn four_weeks_at_15_s_are_10_minute_bins_at_a_regular_step() {
        // What the engine refits on: 28 days at 15 s, both ends included.
        let h = series(28 * 5760 + 1, 15_000, |i, _| (i % 40) as f64);
        let span = h[h.len() - 1].t.millis_since(h[0].t);
        let (_, bins) = summarise(&h, h[0].t, span, FIT_BINS);
        assert_eq!(bins.len(), FIT_BINS + 1); // the last sample starts a bin of its own
        assert!(bins[..FIT_BINS].iter().all(|b| b.v == 19.5));
        let steps: Vec<i64> = bins[..FIT_BINS]
            .windows(2)
            .map(|w| w[1].t.millis_since(w[0].t))
            .collect();
        assert!(steps.iter().all(|&s| s == 600_000));
    }

    #[test]
    fn the_replay_is_the_most_recent_usable_samples() {
        let mut h = series(10, 60_000, |i, _| i as f64);
        h[8].v = f64::NAN;
        assert_eq!(most_recent(&h, 3).len(), 4); // 7, NaN, 9 and 6
        assert_eq!(most_recent(&h, 3)[0].v, 6.0);
        assert_eq!(most_recent(&h, 20).len(), 10);
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
