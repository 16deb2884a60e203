//! portent's default univariate detector: every model of this crate behind one [`Detect`].
//!
//! Per sample, in order:
//! 1. **Expectation.** `yhat = seasonal(t) + level`: the seasonal baseline (when the series has
//!    seasonality, see [`crate::select`]) plus a robust online level that absorbs what the
//!    baseline got wrong since its last fit.
//! 2. **Standardised residual.** `z = (x − yhat) / scale`, with a robust online scale.
//! 3. **Evidence.** Novelty: how far the value lies outside the range the series has shown
//!    (over the fit window, and for this hour of the day or week when it has an evident cycle);
//!    a value only as far out as the window's rarest 0.1% counts the second time in a row.
//!    Deviation: the size of `z` now (spike), a short average of it (level shift), a medium-
//!    against a long-term mean (drift that the level would otherwise absorb). Plus the length
//!    of the current run of identical values (flatline) and the time since the last usable
//!    sample (missing data).
//! 4. **Gating.** Deviation counts only for a value that is new to the series: outside its
//!    range, or outside this hour's range. A value the series has shown in the last weeks is
//!    not an anomaly however it got there (a burst of traffic back to yesterday's peak).
//! 5. **Calibration.** Each statistic's tail is modelled per series (peaks over threshold, see
//!    [`crate::tail`]) and its rarity mapped into `[0, 1]` (see [`calibrate`]); the score is
//!    the largest beyond what was reported recently, and its statistic names the [`Reason`].
//! 6. **Learning.** Only then are level, scale and tails updated with the sample, with
//!    Huber-clipped steps so that an anomaly moves them little.

use std::borrow::Cow;
use std::cell::RefCell;
use std::ops::Deref;
use std::sync::Arc;

use portent_core::{Detect, Direction, Fit, FitError, Reason, Sample, Score, Scored, Timestamp};
use serde::{Deserialize, Serialize};

use crate::online::{Alpha, Ewma, StoredEwma};
use crate::seasonal::SeasonalBaseline;
use crate::select::{Selection, select_model};
use crate::tail::Tail;

/// Options of the default detector. Every field has a default that suits infrastructure
/// metrics; none needs to be set per series.
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectorConfig {
    /// Which deviations count.
    pub direction: Direction,
    /// Deviations smaller than this, in the series' units, never score.
    pub min_abs_deviation: f64,
    /// Deviations smaller than this fraction of the expected value never score.
    pub min_rel_deviation: f64,
    /// How many samples the long-run estimators (scale, quantiles) remember, roughly.
    pub memory: f64,
    /// Span, in samples, of the short average behind the level-shift statistic.
    pub shift_span: f64,
    /// A run of identical values this many times longer than any seen before is a flatline.
    pub flatline_factor: f64,
    /// Missing data is reported once no usable sample came for this many expected steps.
    pub missing_after_steps: f64,
    /// Half-life, in samples, of the memory of an anomaly already reported: evidence is
    /// scored by how far it exceeds that memory.
    pub refractory: f64,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            direction: Direction::Both,
            min_abs_deviation: 0.0,
            min_rel_deviation: 0.0,
            memory: 2000.0,
            shift_span: 8.0,
            flatline_factor: 4.0,
            missing_after_steps: 5.0,
            refractory: 100.0,
        }
    }
}

impl DetectorConfig {
    /// Checks the options, with a message that says what to change.
    pub fn validate(&self) -> Result<(), FitError> {
        let bad = |m: &str| Err(FitError::Config(m.to_string()));
        if self.min_abs_deviation.is_nan() || self.min_abs_deviation < 0.0 {
            return bad("min_abs_deviation: must be >= 0");
        }
        if self.min_rel_deviation.is_nan() || self.min_rel_deviation < 0.0 {
            return bad("min_rel_deviation: must be >= 0");
        }
        if self.memory.is_nan() || self.memory < 10.0 {
            return bad("memory: must be at least 10 samples");
        }
        if self.shift_span.is_nan() || self.shift_span < 1.0 {
            return bad("shift_span: must be at least 1 sample");
        }
        if self.flatline_factor.is_nan() || self.flatline_factor < 1.0 {
            return bad("flatline_factor: must be >= 1");
        }
        if self.refractory.is_nan() || self.refractory < 1.0 {
            return bad("refractory: must be at least 1 sample");
        }
        if self.missing_after_steps.is_nan() || self.missing_after_steps < 1.0 {
            return bad("missing_after_steps: must be >= 1");
        }
        Ok(())
    }
}

impl Fit for DetectorConfig {
    type Fitted = Detector;

    fn fit(&self, history: &[Sample]) -> Result<Detector, FitError> {
        self.validate()?;
        let mut d = Detector::new(*self);
        if !history.is_empty() {
            d.refit(history)?;
        }
        Ok(d)
    }
}

/// The surprise (`−log10` of a tail probability) that scores exactly [`Score::ALERT`].
pub const ALERT_SURPRISE: f64 = 4.5;

/// Maps a surprise into `[0, 1]`: `s⁴ / (s⁴ + a⁴/4)` with `a` = [`ALERT_SURPRISE`].
///
/// A 1-in-100 value (surprise 2) scores 0.14, a 1-in-10,000 value 0.71, a 1-in-30,000 value
/// the alert level 0.8, a 1-in-a-million value 0.93. The alert level sits above 4 because a
/// sample is judged on several kinds of evidence at once: all together, a healthy series
/// sampled every minute then crosses 0.8 about once or twice a week (see the calibration tests).
#[inline]
pub fn calibrate(surprise: f64) -> f64 {
    if surprise.is_nan() || surprise <= 0.0 {
        return 0.0;
    }
    let s2 = surprise * surprise;
    let s4 = s2 * s2;
    let a2 = ALERT_SURPRISE * ALERT_SURPRISE;
    s4 / (s4 + a2 * a2 / 4.0)
}

/// A model's options and what follows from them, held once for all its series (see [`Tuned`]).
#[derive(Debug)]
struct Tuning {
    config: DetectorConfig,
    /// Smoothing factors of the averages whose spans are options.
    scale: Alpha,
    shift: Alpha,
    /// Per-sample decay of `recent_peak`, from `config.refractory` (kept to spare a `powf`).
    peak_decay: f64,
}

/// A shared [`Tuning`]: a pointer where the options were 64 bytes and their derived factors
/// 24 more, inline in every detector. Detectors made one after another with equal options
/// (a model's new series, a state file's load) share one (see [`Tuned::of`]).
#[derive(Clone, Debug)]
struct Tuned(Arc<Tuning>);

thread_local! {
    /// The last tuning made on this thread: the next detector most likely has the same
    /// options. Not a global table of every options ever seen, which would never shrink.
    static LAST_TUNED: RefCell<Option<Tuned>> = const { RefCell::new(None) };
}

impl Tuned {
    fn of(config: DetectorConfig) -> Self {
        LAST_TUNED.with_borrow_mut(|last| match last {
            Some(t) if t.config == config => t.clone(),
            _ => {
                let t = Tuned(Arc::new(Tuning {
                    config,
                    scale: Alpha::from_span(config.memory / 4.0),
                    shift: Alpha::from_span(config.shift_span),
                    peak_decay: 0.5f64.powf(1.0 / config.refractory),
                }));
                *last = Some(t.clone());
                t
            }
        })
    }
}

impl Deref for Tuned {
    type Target = Tuning;

    fn deref(&self) -> &Tuning {
        &self.0
    }
}

impl PartialEq for Tuned {
    /// Equal options: the rest follows from them.
    fn eq(&self, other: &Self) -> bool {
        self.config == other.config
    }
}

/// Smoothing factors of the averages whose spans are constants.
const STEP_ALPHA: Alpha = Alpha::from_span(100.0);
const DRIFT_FAST_ALPHA: Alpha = Alpha::from_span(DRIFT_FAST);
const DRIFT_SLOW_ALPHA: Alpha = Alpha::from_span(DRIFT_SLOW);
const VOL_ALPHA: Alpha = Alpha::from_span(VOL_SPAN);

/// The fitted state of the default detector: about a kilobyte per series.
///
/// Saved as [`Stored`], the layout of state format version 4.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(from = "Stored<'static>")]
pub struct Detector {
    tuned: Tuned,
    selection: Selection,
    baseline: Option<SeasonalBaseline>,
    level: f64,
    scale: Ewma,
    seen: u64,
    last_t: Option<Timestamp>,
    last_finite: Option<(Timestamp, f64)>,
    step_ms: Ewma,
    shift: Ewma,
    drift_fast: Ewma,
    drift_slow: Ewma,
    t_spike: Tail,
    t_shift: Tail,
    t_drift: Tail,
    t_range: Tail,
    t_context: Tail,
    /// Per-hour-of-day value ranges, for series with daily seasonality.
    hourly: Option<HourlyRange>,
    /// The seasonal shift statistic, for such series sampled often enough (see
    /// [`SeasonalShift`]). Boxed: most series have none, and inline it would grow every
    /// series' state by its 600 bytes.
    seasonal_shift: Option<Box<SeasonalShift>>,
    /// The range of values seen (in the fit window, and since) without the window's most
    /// extreme 0.1% at each end ([`RANGE_TRIM`]), and their robust spread. Since the fit, every
    /// value widens it but a lone one beyond it that the untrimmed range already held.
    lo: f64,
    hi: f64,
    spread: f64,
    /// The same range with those extremes: what the series has reached at all.
    lo_full: f64,
    hi_full: f64,
    /// The trimmed range widened by every value since, lone rare ones included: a new record
    /// is measured from what was seen, not from the edge those values left alone.
    lo_seen: f64,
    hi_seen: f64,
    /// The side (1 above, -1 below) of the last value if it lay beyond `[lo, hi]`, else 0.
    beyond_side: i8,
    /// Whether two days of history are known: before that a daily cycle looks like drift.
    drift_known: bool,
    /// Whether the range comes from at least a day of history.
    range_known: bool,
    run: u32,
    max_run: u32,
    changes: u32,
    /// The highest evidence reported recently, decaying with `config.refractory` half-life.
    recent_peak: f64,
    /// Consecutive outliers on one side: positive above, negative below.
    outliers: i32,
    /// Short-term mean of the clipped |residual|: with `scale`, the volatility ratio.
    vol: Ewma,
    /// The highest volatility ratio of each of the last [`VOL_DAYS`] days (UTC), by day number
    /// modulo their count, and the day of the latest sample: a past incident's turbulence is
    /// forgotten after four weeks, like a past incident's values leave the known range.
    /// Inline rather than a `Vec`: it is written on every sample, and a heap array is one more
    /// cache miss per sample at 100,000 series. Stored as a sequence, as the `Vec` was.
    vol_days: [f32; VOL_DAYS],
    vol_day: i64,
    /// Day changes seen (saturating): the reference means something once a whole day is in.
    vol_day_changes: u32,
    /// The highest ratio over those days before today: the reference a ratio is judged by.
    vol_hi: f64,
    t_vol: Tail,
}

/// Samples the detector observes before it says anything.
const WARMUP: u64 = 20;
/// Values up to which the known range is computed from every value of the window.
const RANGE_SAMPLE: usize = 16_384;
/// Fraction of the fit window's values, at each end, left out of the known range.
const RANGE_TRIM: f64 = 0.001;
/// The fraction of the known range below which a value beyond it is barely new (see
/// `Detector::novelty_unit`).
const NOVELTY_RANGE_FRACTION: f64 = 0.05;
/// Days of history before per-hour-of-day ranges are used: a whole week, so that the first
/// weekend of a series with a weekly cycle is not judged by the weekdays' hours alone.
const CONTEXT_DAYS: i64 = 7;
/// Weeks of history before per-hour-of-week ranges are used.
const CONTEXT_WEEKS: i64 = 3;
/// Samples after which the statistics' evidence is trusted fully.
const CONFIDENT_AFTER: f64 = 200.0;
/// Robust clipping of updates, in scales.
const CLIP: f64 = 3.0;
/// Consecutive same-sided outliers after which the level jumps to the new value.
const ACCEPT_SHIFT_AFTER: u32 = 3;
/// Changes of value a series must have shown before it can flatline.
const MIN_CHANGES: u32 = 10;
/// Spans, in samples, of the drift statistic's medium- and long-term means. Consecutive values
/// of the statistic overlap by nearly `DRIFT_FAST` samples, so its tail is learnt from about
/// `1/DRIFT_FAST` as many independent observations as the others': its surprise is discounted
/// by `log10(DRIFT_FAST)` to stay as rare on a healthy series.
const DRIFT_FAST: f64 = 100.0;
const DRIFT_SLOW: f64 = 1000.0;
/// Span, in samples, of the short-term mean |residual| of the volatility statistic.
const VOL_SPAN: f64 = 30.0;
/// Samples after which the volatility ratio is steady enough to keep its highest value
/// (before, the long-term scale itself is still being learnt).
const VOL_SETTLED_AFTER: u64 = 100;
/// Samples after which a volatility ratio beyond the highest seen is evidence.
const VOL_KNOWN_AFTER: u64 = 600;
/// Days over which the highest volatility ratio is remembered: the default fit window.
const VOL_DAYS: usize = 28;
/// The unit of volatility novelty, as a fraction of the highest ratio seen.
const VOL_UNIT_FRACTION: f64 = 0.2;

impl Detector {
    /// A detector that has seen nothing yet.
    pub fn new(config: DetectorConfig) -> Self {
        Self {
            tuned: Tuned::of(config),
            selection: Selection::default(),
            baseline: None,
            level: f64::NAN,
            scale: Ewma::new(),
            seen: 0,
            last_t: None,
            last_finite: None,
            step_ms: Ewma::new(),
            shift: Ewma::new(),
            drift_fast: Ewma::new(),
            drift_slow: Ewma::new(),
            // Priors: |z| and a short mean of z for Gaussian noise; drift in scales.
            t_spike: Tail::new(0.8, 0.6, config.memory),
            t_shift: Tail::new(0.27, 0.2, config.memory),
            t_drift: Tail::new(0.5, 1.0, config.memory),
            // Mostly zero: a value inside the range seen is not novel.
            t_range: Tail::new(0.0, 0.05, config.memory),
            t_context: Tail::new(0.0, 0.05, config.memory),
            hourly: None,
            seasonal_shift: None,
            lo: f64::INFINITY,
            hi: f64::NEG_INFINITY,
            spread: 0.0,
            lo_full: f64::INFINITY,
            hi_full: f64::NEG_INFINITY,
            lo_seen: f64::INFINITY,
            hi_seen: f64::NEG_INFINITY,
            beyond_side: 0,
            range_known: false,
            drift_known: false,
            run: 0,
            max_run: 1,
            changes: 0,
            outliers: 0,
            recent_peak: 0.0,
            vol: Ewma::new(),
            vol_days: [0.0; VOL_DAYS],
            vol_day: i64::MIN,
            vol_day_changes: 0,
            vol_hi: 0.0,
            t_vol: Tail::new(0.0, 0.05, config.memory),
        }
    }

    /// The model choice made at the last refit.
    pub fn selection(&self) -> Selection {
        self.selection
    }

    fn seasonal(&self, t: Timestamp) -> f64 {
        self.baseline.map_or(0.0, |b| b.predict(t))
    }

    /// The finite samples observed so far (a fit observes none; the warm-up that follows it
    /// does).
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// The expected step between samples, in ms, once known.
    pub fn expected_step_ms(&self) -> Option<f64> {
        let s = self.step_ms.get();
        s.is_finite().then_some(s)
    }

    fn missing(&self, t: Timestamp) -> Option<Scored> {
        let (last, _) = self.last_finite?;
        let step = self.expected_step_ms()?;
        let overdue = t.millis_since(last) as f64 / step;
        if overdue < self.tuned.config.missing_after_steps {
            return None;
        }
        let u = overdue / self.tuned.config.missing_after_steps;
        let mut s = self.expectation(t, f64::NAN, self.seasonal(t));
        s.score = Score::saturating(calibrate(ALERT_SURPRISE * u));
        s.reason = Some(Reason::MissingData);
        Some(s)
    }

    /// The expectation at `t`, given the baseline's value there (computed once per sample by
    /// the caller: it costs two `sin_cos`).
    fn expectation(&self, t: Timestamp, value: f64, base: f64) -> Scored {
        let mut s = Scored::unknown(t, value);
        if self.seen >= WARMUP && self.level.is_finite() {
            let yhat = base + self.level;
            let band = self.band();
            s.yhat = yhat;
            s.yhat_lower = yhat - band;
            s.yhat_upper = yhat + band;
        }
        s
    }

    /// Half-width of the expected band: the deviation that would score the alert level as a
    /// spike.
    fn band(&self) -> f64 {
        self.t_spike.quantile_for_surprise(ALERT_SURPRISE) * self.sigma()
    }

    fn sigma(&self) -> f64 {
        let s = self.scale.get() * 1.2533; // mean |e| → σ for Gaussian noise
        let floor = 1e-9 * (self.level.abs() + 1e-9);
        if s.is_finite() { s.max(floor) } else { floor }
    }

    fn score_finite(&mut self, t: Timestamp, x: f64) -> Scored {
        let base = self.seasonal(t);
        let mut out = self.expectation(t, x, base);
        if !self.level.is_finite() {
            self.level = x - base;
            self.last_finite = Some((t, x));
            self.seen += 1;
            return out;
        }
        let pred = base + self.level;
        let e = x - pred;
        let sigma = self.sigma();
        let z = e / sigma;
        // While warming up the scale is not known yet: nothing can be called an outlier.
        let warm = self.seen >= WARMUP;

        // Deviations the user asked us to ignore contribute nothing.
        let admitted = self.tuned.config.direction.admits(e)
            && e.abs() >= self.tuned.config.min_abs_deviation
            && e.abs() >= self.tuned.config.min_rel_deviation * pred.abs();
        let zc = z.clamp(-50.0, 50.0);
        let z_scored = if admitted { zc } else { 0.0 };

        // Statistics.
        let spike = z_scored.abs();
        self.shift.push(self.tuned.shift, zc);
        let m = self.shift.get();
        let m_scored = if self.tuned.config.direction.admits(m) {
            m.abs()
        } else {
            0.0
        };
        let shift = if admitted { m_scored } else { 0.0 };
        // Drift: a medium-term mean of the deseasonalised value against a long-term one, in
        // scales. A leak that the fast level follows step by step still pulls the two apart.
        let r = x - base;
        self.drift_fast.push(DRIFT_FAST_ALPHA, r);
        self.drift_slow.push(DRIFT_SLOW_ALPHA, r);
        let gap = (self.drift_fast.get() - self.drift_slow.get()) / sigma;
        // Each novelty statistic is `None` until it means something: its tail then learns
        // only from real values, not from the zeros of a statistic that was switched off.
        let drift_raw =
            (self.drift_known && self.drift_slow.weight() > 0.63).then(|| gap.abs().min(1e6));
        let drift = scored_if(
            drift_raw,
            admitted && self.tuned.config.direction.admits(gap),
        );

        // Novelty: how far outside every value seen before, in novelty units (computed once
        // here: the range and spread do not change before the sample is learnt). Only once the
        // range has been learnt over two days: until then every daily peak would be "new".
        let unit = self.novelty_unit();
        // A value beyond the trimmed range but within the untrimmed one is as far out as only
        // the window's rarest few values went: it is new the second time in a row (on the same
        // side), not alone. A lone one repeats a past burst. Before, every burst of a spiky
        // series a little beyond its trimmed range was new: on NAB, 291 false-positive rows at
        // the standard threshold, 155 after, three windows fewer found; standard 68.05 ->
        // 71.52, and healthy alerts a week fell on every calibration shape but the daily one.
        let trimmed = beyond_range(x, self.lo, self.hi);
        let side = if trimmed > 0.0 {
            1
        } else if trimmed < 0.0 {
            -1
        } else {
            0
        };
        let seen_before = beyond_range(x, self.lo_full, self.hi_full) == 0.0;
        let lone = side != 0 && seen_before && side != self.beyond_side;
        self.beyond_side = side;
        let outside = if lone {
            0.0
        } else if seen_before {
            trimmed
        } else {
            beyond_range(x, self.lo_seen, self.hi_seen)
        };
        let range_raw =
            (self.range_known && self.spread > 0.0).then(|| (outside.abs() / unit).min(1e6));
        // The tail learns what the value showed, lone or not: a series whose rarest values
        // come back alone now and then is one for which a little beyond is ordinary.
        let range_learnt = range_raw.map(|r| {
            if lone {
                (trimmed.abs() / unit).min(1e6)
            } else {
                r
            }
        });
        let range = scored_if(
            range_raw,
            admitted && self.tuned.config.direction.admits(outside),
        );

        // Contextual novelty: outside every value seen at this hour of the day (only for a
        // series with daily seasonality, whose hours differ): a 3 PM traffic drop to a level
        // that is normal at 3 AM.
        let hour = self.hourly.as_ref().map_or(0, |h| h.bin(t));
        if let (Some(h), Some(ss)) = (&mut self.hourly, &mut self.seasonal_shift) {
            ss.enter(h, t);
        }
        let (context_raw, context_outside) = match &self.hourly {
            Some(h) if self.spread > 0.0 => {
                // The hour's range on the days before and so far today, as one.
                let (lo, hi) = h.range(hour);
                let (lo, hi) = self
                    .seasonal_shift
                    .as_ref()
                    .map_or((lo, hi), |ss| ss.with_today(lo, hi));
                let out = beyond_range(x, lo, hi);
                (Some((out.abs() / unit).min(1e6)), out)
            }
            _ => (None, 0.0),
        };
        // Seasonal shift: how far values lie beyond this hour's range on the days before, on
        // average over the last few samples (see [`SeasonalShift`]).
        let shifted = match (&self.hourly, &mut self.seasonal_shift) {
            (Some(_), Some(ss)) if self.spread > 0.0 => {
                Some(ss.observe(self.tuned.shift, t, x, unit, sigma))
            }
            _ => None,
        };
        let seasonal_shift_raw = shifted.map(|s| s.mean.abs().min(1e6));
        let seasonal_shift = scored_if(
            seasonal_shift_raw,
            shifted.is_some_and(|s| {
                s.counts && admitted && self.tuned.config.direction.admits(s.mean)
            }),
        );
        let context = scored_if(
            context_raw,
            admitted && self.tuned.config.direction.admits(context_outside),
        );

        // Volatility novelty: the short-term mean |residual| against the long-term one, beyond
        // the highest ratio of the previous days (up to four weeks) by at least a fifth of it.
        // Every value may lie in the known range while they swing around the expectation more
        // widely than ever: a variance change no value-based statistic sees. NAB 65.99 / 54.59
        // / 71.58 -> 67.93 / 56.18 / 73.74, at the cost of one more alert in four weeks on the
        // Student-t series of the calibration tests and none on the others. Any record at all
        // counted gave 68.48 on NAB but one more false alarm a month on every healthy shape; a
        // tenth as the unit, one more on three shapes. Spans of 20 and 40 samples gain half.
        let clipped_abs = if warm {
            e.abs().min(CLIP * sigma)
        } else {
            e.abs()
        };
        self.vol.push(VOL_ALPHA, clipped_abs);
        let ratio = self.vol.get() / self.scale.get();
        // The reference needs a whole day in it (the first change starts day one, the second
        // ends it): a partial first day's highest is beaten by chance.
        let vol_raw = (self.seen >= VOL_KNOWN_AFTER
            && self.vol_day_changes >= 3
            && ratio.is_finite()
            && self.vol_hi > 0.0)
            .then(|| {
                let unit = VOL_UNIT_FRACTION * self.vol_hi;
                let excess = ((ratio - self.vol_hi).max(0.0) / unit).min(1e6);
                // A record by less than a unit is chance, as for the range.
                if excess >= 1.0 { excess } else { 0.0 }
            });
        if self.seen >= VOL_SETTLED_AFTER && ratio.is_finite() {
            self.learn_volatility(t, ratio);
        }

        // Flatline: a run of identical values; when one ends, its length is learnt as normal.
        let flat = self.last_finite.is_some_and(|(_, prev)| prev == x);
        if flat {
            self.run = self.run.saturating_add(1);
        } else {
            self.max_run = self.max_run.max(self.run);
            self.run = 0;
        }

        if self.seen >= WARMUP {
            // Deviation from the expectation is evidence only for a value that is new to the
            // series: beyond the range it has shown in the fit window, or this hour's range, by
            // at least the unit novelty is measured in. A jump back to a level seen in the last
            // weeks is ordinary for it, however sudden (bursty traffic, a nightly job), and so
            // is a new record by a hair. On the NAB corpus, deviation without novelty made more
            // false alarms than detections: with it gated, the standard profile rose from 62.3
            // to 66.0. A young series' range is what it has shown so far.
            let beyond = |d: f64| d != 0.0 && d.abs() >= unit;
            let new_value = beyond(outside) || beyond(context_outside);
            let deviation = if new_value { 1.0 } else { 0.0 };
            // A young series' tails are mostly prior: its evidence is trusted in proportion to
            // how much it has seen, so a new pod does not page in its first minutes.
            let trust = (self.seen as f64 / CONFIDENT_AFTER).min(1.0);
            let shift_evidence = self.seasonal_shift.as_ref().map_or(0.0, |ss| {
                calibrate(trust * ss.tail.surprise(seasonal_shift))
            });
            let candidates = [
                (
                    deviation * calibrate(trust * self.t_spike.surprise(spike)),
                    Reason::Spike,
                ),
                (
                    deviation * calibrate(trust * self.t_shift.surprise(shift)),
                    Reason::LevelShift,
                ),
                (
                    deviation
                        * calibrate(trust * (self.t_drift.surprise(drift) - DRIFT_FAST.log10())),
                    Reason::Drift,
                ),
                (
                    calibrate(trust * self.t_range.surprise(range)),
                    Reason::LevelShift,
                ),
                (
                    calibrate(trust * self.t_context.surprise(context)),
                    Reason::SeasonalityBreak,
                ),
                (shift_evidence, Reason::Drift),
                (self.flatline_score(), Reason::Flatline),
                (
                    calibrate(trust * self.t_vol.surprise(vol_raw.unwrap_or(0.0))),
                    Reason::Volatility,
                ),
            ];
            let (best, mut reason) = candidates
                .into_iter()
                .fold((0.0, Reason::Spike), |a, b| if b.0 > a.0 { b } else { a });
            if reason == Reason::Spike && self.seasonality_break(x, t, sigma) {
                reason = Reason::SeasonalityBreak;
            }
            let mut from_shift = best > 0.0 && best == shift_evidence;
            // Report what is new: the evidence beyond the (decaying) peak already reported.
            // An ongoing incident scores at its onset and whenever it gets worse, not on every
            // sample, so one incident is one alert and its echoes do not page again.
            let p = self.recent_peak;
            let novel = if best > p {
                (best - p) / (1.0 - p).max(1e-9)
            } else {
                0.0
            };
            self.recent_peak = (p * self.peak_decay()).max(best);
            // A seasonal shift is reported once per excursion, whatever the peak: its evidence
            // rises over minutes, and each step's rise is too small to pass the peak that the
            // step before raised (a creep scored 0.55 a step at most, never the alert level).
            let mut novel = novel;
            if let (Some(ss), Some(s)) = (&mut self.seasonal_shift, shifted) {
                if shift_evidence >= Score::ALERT.get() && !ss.latched {
                    ss.latched = true;
                    if shift_evidence > novel {
                        novel = shift_evidence;
                        reason = Reason::Drift;
                        from_shift = true;
                    }
                } else if ss.latched
                    && ss.tail.surprise(s.mean.abs()) < SEASONAL_SHIFT_UNLATCH_BELOW
                {
                    ss.latched = false;
                }
            }
            // A seasonal shift's verdict is expected within the hour's range on the days
            // before: the edge the value left is what an incident's member must stay beyond
            // to still be the problem (the level that follows a creep is not).
            if let Some(s) = shifted.filter(|_| from_shift) {
                if s.mean > 0.0 && s.hi.is_finite() {
                    out.yhat_upper = s.hi;
                } else if s.mean < 0.0 && s.lo.is_finite() {
                    out.yhat_lower = s.lo;
                }
            }
            let best = novel;
            out.score = Score::saturating(best);
            out.reason = (best >= 0.5).then_some(reason);
        }

        // Learn.
        if warm {
            self.t_spike.update(zc.abs());
            self.t_shift.update(m.abs());
            for (tail, raw) in [
                (&mut self.t_drift, drift_raw),
                (&mut self.t_range, range_learnt),
                (&mut self.t_context, context_raw),
                (&mut self.t_vol, vol_raw),
            ] {
                if let Some(v) = raw {
                    tail.update(v);
                }
            }
            // The seasonal shift's tail learns each value half an hour late: a creep's values
            // stay beyond the hour's past range for hours, and learnt as they came they would
            // teach it that the creep is normal before it is reported.
            if let (Some(ss), Some(v)) = (&mut self.seasonal_shift, seasonal_shift_raw)
                && let Some(old) = ss.delay(v)
            {
                ss.tail.update(old);
            }
        }
        match (&mut self.hourly, &mut self.seasonal_shift) {
            (Some(_), Some(ss)) => ss.widen_today(x),
            (Some(h), None) => h.widen(hour, x),
            _ => {}
        }
        // A lone rare value leaves the trimmed range as it was: widened by it, the range would
        // make the value after it, as high again, no longer new (NAB 70.58 / 64.08 / 74.64
        // when it did). The range as seen takes it, for records.
        if !lone {
            self.lo = self.lo.min(x);
            self.hi = self.hi.max(x);
        }
        self.lo_full = self.lo_full.min(x);
        self.hi_full = self.hi_full.max(x);
        self.lo_seen = self.lo_seen.min(x);
        self.hi_seen = self.hi_seen.max(x);

        let clipped = if warm {
            e.clamp(-CLIP * sigma, CLIP * sigma)
        } else {
            e
        };
        // Outliers move the level by a clipped step only, so a spike does not drag the
        // expectation; but a run of same-sided outliers is a new level, accepted at once.
        if warm && e.abs() > CLIP * sigma {
            let side = if e > 0.0 { 1 } else { -1 };
            self.outliers = if self.outliers.signum() == side {
                self.outliers + side
            } else {
                side
            };
        } else {
            self.outliers = 0;
        }
        if self.outliers.unsigned_abs() >= ACCEPT_SHIFT_AFTER {
            self.level = x - base;
            self.outliers = 0;
        } else {
            self.level += self.selection.alpha * clipped;
        }
        self.scale.push(self.tuned.scale, clipped.abs());
        if !flat {
            self.changes = self.changes.saturating_add(1);
        }
        self.last_finite = Some((t, x));
        self.seen += 1;
        out
    }

    /// The unit novelty is measured in: the values' robust spread, or a twentieth of the known
    /// range when that is larger. A series that idles near zero and bursts to 5 M has a spread
    /// near zero, so each burst a thousandth above the last record was a new extreme by
    /// thousands of spreads (NAB `ec2_network_in_5abac7` paged on every burst); beyond the range
    /// by 5% of it, a value is new. NAB 64.95 / 52.71 / 70.88 -> 65.48 / 54.12 / 71.24 (and
    /// 65.99 / 54.59 / 71.58 once deviation needs novelty of one such unit).
    fn novelty_unit(&self) -> f64 {
        let width = self.hi - self.lo;
        if width.is_finite() {
            self.spread.max(NOVELTY_RANGE_FRACTION * width)
        } else {
            self.spread
        }
    }

    /// Records `ratio` as seen at `t` in its day's maximum, forgetting the days that left the
    /// window.
    fn learn_volatility(&mut self, t: Timestamp, ratio: f64) {
        let day = t.millis().div_euclid(crate::seasonal::DAY_MS);
        let n = VOL_DAYS as i64;
        if day != self.vol_day {
            if self.vol_day == i64::MIN || day - self.vol_day >= n || day < self.vol_day {
                self.vol_days.fill(0.0);
            } else {
                for d in self.vol_day + 1..=day {
                    self.vol_days[d.rem_euclid(n) as usize] = 0.0;
                }
            }
            self.vol_day = day;
            self.vol_day_changes = self.vol_day_changes.saturating_add(1);
            // Today's slot was just cleared: the reference is the previous days' highest. It
            // is not raised sample by sample, since a ratio that climbs over an hour (a short
            // mean catching up) would then never be beyond it by a unit.
            self.vol_hi = self.vol_days.iter().copied().fold(0.0, f32::max).into();
        }
        let slot = &mut self.vol_days[day.rem_euclid(n) as usize];
        *slot = slot.max(ratio as f32);
    }

    fn peak_decay(&self) -> f64 {
        self.tuned.peak_decay
    }

    fn flatline_limit(&self) -> f64 {
        (self.max_run as f64 * self.tuned.config.flatline_factor).max(5.0)
    }

    /// A series that used to change and has stopped: scores from the run's length against the
    /// longest run seen before. A series that never changed (a constant) never flatlines.
    fn flatline_score(&self) -> f64 {
        let limit = self.flatline_limit();
        if self.changes < MIN_CHANGES || (self.run as f64) < limit {
            return 0.0;
        }
        // Past the alert level from the first sample over the limit, so that the onset of a
        // stuck exporter pages even through a recent anomaly's memory.
        // Past the alert level from the first sample over the limit, so that the onset of a
        // stuck exporter pages even through a recent anomaly's memory.
        calibrate((ALERT_SURPRISE + 1.0) * self.run as f64 / limit)
    }

    /// A spike that is normal for the series overall but not for this time of day or week.
    fn seasonality_break(&self, x: f64, t: Timestamp, sigma: f64) -> bool {
        let Some(b) = self.baseline else { return false };
        if !b.seasonality().is_seasonal() {
            return false;
        }
        let without = self.level + b.trend(t);
        ((x - without) / sigma).abs() < 2.0
    }
}

impl Detect for Detector {
    fn observe(&mut self, sample: Sample) -> Scored {
        if let Some(last) = self.last_t {
            if sample.t <= last {
                return Scored::unknown(sample.t, sample.v);
            }
            let dt = sample.t.millis_since(last) as f64;
            // Only steps between usable samples teach the cadence; the median-like clip keeps a
            // long gap from inflating it.
            let expected = self.step_ms.get();
            let dt = if expected.is_finite() {
                dt.min(3.0 * expected)
            } else {
                dt
            };
            if sample.is_finite() {
                self.step_ms.push(STEP_ALPHA, dt);
            }
        }
        self.last_t = Some(sample.t);
        if !sample.is_finite() {
            return self.missing(sample.t).map_or_else(
                || self.expectation(sample.t, sample.v, self.seasonal(sample.t)),
                |mut s| {
                    s.value = sample.v;
                    s
                },
            );
        }
        self.score_finite(sample.t, sample.v)
    }

    fn refit(&mut self, history: &[Sample]) -> Result<(), FitError> {
        // A refit chooses among the seasonalities its history is long enough to show. Given
        // less than the model in use was chosen on (a push buffer that holds hours of each of
        // 100,000 series, not days; a daemon whose buffer restarted empty), it would drop the
        // cycle the model learnt for want of seeing it: the model stays, and goes on learning
        // online.
        let needed_ms = crate::select::span_to_consider(self.selection.seasonality)
            .max(crate::select::span_to_consider(self.selection.evident));
        if needed_ms > 0 {
            let got_ms = crate::select::finite_bounds(history)
                .map_or(0, |(first, last)| last.millis_since(first));
            if got_ms < needed_ms {
                return Err(FitError::ShorterThanModel { needed_ms, got_ms });
            }
        }
        let (selection, baseline) = select_model(history)?;
        // Move the level onto the new baseline so the expectation is continuous.
        if let Some((t, _)) = self.last_finite {
            let old = self.seasonal(t) + self.level;
            let new_base = baseline.map_or(0.0, |b| b.predict(t));
            if old.is_finite() {
                self.level = old - new_base;
            }
            // The drift means are of the deseasonalised value: move them with the baseline,
            // or start them afresh when the seasonal structure itself changed (their past
            // values then hold a cycle that the new baseline removes).
            let moved = self.seasonal(t) - new_base;
            if selection.seasonality != self.selection.seasonality {
                self.drift_fast = Ewma::new();
                self.drift_slow = Ewma::new();
            } else if moved.is_finite() {
                self.drift_fast.shift(moved);
                self.drift_slow.shift(moved);
            }
        }
        self.selection = selection;
        self.baseline = baseline;
        // Quantiles of a very long window (four weeks at a 15 s step is 161,000 values) are
        // taken from an evenly strided subset of at most 2 x RANGE_SAMPLE values: the range and
        // spread are as well determined by it, and a daily refit stays cheap. Windows up to
        // RANGE_SAMPLE values (every NAB window) use every value.
        let stride = (history.len() / RANGE_SAMPLE).max(1);
        let mut values: Vec<f64> = history
            .iter()
            .step_by(stride)
            .map(|s| s.v)
            .filter(|v| v.is_finite())
            .collect();
        if values.len() >= 4 {
            // Four order statistics, each found in linear time within the part of the buffer
            // below the previous one: a full sort of a 28-day window at 15 s steps (161,000
            // values) was most of the cost of a long `detect`.
            let [lo, q1, q3, hi] =
                quantiles(&mut values, [RANGE_TRIM, 0.25, 0.75, 1.0 - RANGE_TRIM]);
            // The range leaves out the most extreme 0.1% of the window, so that a past incident
            // does not widen it enough to hide the next one.
            self.lo = lo;
            self.hi = hi;
            (self.lo_seen, self.hi_seen) = (lo, hi);
            // Untrimmed, over every value rather than the strided subset: its extremes are
            // the point.
            (self.lo_full, self.hi_full) = history
                .iter()
                .map(|s| s.v)
                .filter(|v| v.is_finite())
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                    (lo.min(v), hi.max(v))
                });
            let iqr = q3 - q1;
            self.spread = if iqr > 0.0 {
                iqr / 1.349
            } else {
                (self.hi - self.lo) / 4.0
            };
            let span = history[history.len() - 1].t.millis_since(history[0].t);
            self.range_known = span >= 2 * crate::seasonal::DAY_MS;
            self.drift_known = span >= 2 * crate::seasonal::DAY_MS;
            // Hours differ only for a series with a daily cycle, and each hour's range needs a
            // few days to mean anything. Hours of the week once a weekly cycle is known well
            // enough, else hours of the day.
            let day = crate::seasonal::DAY_MS;
            // The cycles evident in the values, not only those the baseline predicts with: a
            // square wave is best predicted by its last value, yet its hours differ.
            let cycles = self.selection.evident;
            let period = if cycles.weekly > 0 && span >= CONTEXT_WEEKS * 7 * day {
                Some(crate::seasonal::WEEK_MS)
            } else if cycles.daily > 0 && span >= CONTEXT_DAYS * day {
                Some(day)
            } else {
                None
            };
            let weekly = period == Some(crate::seasonal::WEEK_MS);
            // The seasonal shift runs on series sampled every two minutes or more often; its
            // state (a tail learnt over weeks) survives a refit that keeps the hourly ranges.
            let often =
                portent_core::median_step(history).is_some_and(|s| s <= SEASONAL_SHIFT_MAX_STEP_MS);
            let mut ss = if period.is_some() && often {
                Some(
                    self.seasonal_shift
                        .take()
                        .unwrap_or_else(|| Box::new(SeasonalShift::new(self.tuned.config.memory))),
                )
            } else {
                None
            };
            self.hourly = period.map(|_| {
                let mut h = HourlyRange::empty(weekly);
                // With the seasonal shift on, the hour under way is kept apart from the days
                // before: the history's last hour goes to it.
                if let Some(ss) = &mut ss {
                    ss.clear();
                }
                for s in history.iter().filter(|s| s.is_finite()) {
                    match &mut ss {
                        Some(ss) => {
                            // Each hour's values are gathered, and join the ranges whole when
                            // the next begins; the last hour's stay the hour under way.
                            ss.enter(&mut h, s.t);
                            ss.widen_today(s.v);
                        }
                        None => h.widen(h.bin(s.t), s.v),
                    }
                }
                h
            });
            self.seasonal_shift = ss;
        }
        Ok(())
    }

    fn tick(&mut self, now: Timestamp) -> Option<Scored> {
        self.missing(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use portent_core::seeded::{gauss, uniform};

    #[test]
    fn white_noise_rarely_alerts() {
        let mut d = DetectorConfig::default().fit(&[]).unwrap();
        let mut alerts = 0;
        for i in 0..20_000u64 {
            let s = d.observe(Sample::new(
                Timestamp::from_secs(i as i64 * 60),
                10.0 + gauss(i),
            ));
            if i > 500 && s.score >= Score::ALERT {
                alerts += 1;
            }
        }
        assert!(alerts < 10, "{alerts} alerts on white noise");
    }

    /// Days of a daily cycle (100 ± 30, noise σ = 2) at `step_s`, starting on a Monday at
    /// midnight UTC, plus `creep(minutes since 09:00 on the last day)` from then on.
    fn cycle_with_creep(days: i64, step_s: i64, creep: impl Fn(i64) -> f64) -> Vec<Sample> {
        let t0 = 1_700_438_400; // Monday 2023-11-20 00:00 UTC
        let start = t0 + (days - 1) * 86_400 + 9 * 3_600;
        (0..days * 86_400 / step_s)
            .map(|i| {
                let t = t0 + i * step_s;
                let day = std::f64::consts::TAU * (t.rem_euclid(86_400) as f64 / 86_400.0);
                let extra = if t >= start {
                    creep((t - start) / 60)
                } else {
                    0.0
                };
                let v = 100.0 + 30.0 * day.sin() + 2.0 * gauss(i as u64) + extra;
                Sample::new(Timestamp::from_secs(t), v)
            })
            .collect()
    }

    /// Fits on all but the last day of `samples` and scores the last day, as the daemon does
    /// after its daily refit: the verdicts of the last day.
    fn last_day(samples: &[Sample], per_day: usize) -> Vec<Scored> {
        let (fit, live) = samples.split_at(samples.len() - per_day);
        let mut d = DetectorConfig::default().fit(fit).unwrap();
        for &s in fit {
            d.observe(s);
        }
        live.iter().map(|&s| d.observe(s)).collect()
    }

    /// The case that motivated portent: a value that creeps up by a quarter σ a minute from
    /// 09:00, on a series whose daily cycle spans fifteen times that hour's creep. Before the
    /// seasonal shift statistic, the level followed the creep and the hour's range widened
    /// with it: `eval sim`'s latency creep was flagged after 65 minutes on every seed.
    #[test]
    fn a_creep_beyond_its_hours_past_range_is_flagged_as_drift_within_minutes() {
        let samples = cycle_with_creep(9, 60, |m| 0.5 * m as f64);
        let day = last_day(&samples, 1440);
        let start = 9 * 60;
        let alerts: Vec<(usize, &Scored)> = day
            .iter()
            .enumerate()
            .filter(|(_, s)| s.score >= Score::ALERT)
            .collect();
        let &(first, v) = alerts.first().expect("the creep was flagged");
        assert!(
            (start..=start + 25).contains(&first),
            "flagged {} minutes after the creep began",
            first as i64 - start as i64
        );
        assert_eq!(v.reason, Some(Reason::Drift));
        // The band on that verdict is the hour's past range: the value left it upward.
        assert!(v.yhat_upper < v.value, "{v:?}");
        assert!(v.yhat_upper > 100.0 + 30.0 * 0.7, "{v:?}");
        // One alert for the excursion, not one a minute while it goes on.
        let during = alerts
            .iter()
            .filter(|(i, _)| (start..start + 180).contains(i));
        assert!(during.count() <= 2, "{alerts:?}");
        // Without the creep, the same day has no drift alert.
        let healthy = last_day(&cycle_with_creep(9, 60, |_| 0.0), 1440);
        assert!(
            !healthy
                .iter()
                .any(|s| s.score >= Score::ALERT && s.reason == Some(Reason::Drift)),
        );
    }

    /// The statistic is kept for series sampled every two minutes or more often: on coarser
    /// ones an hour holds too few samples for it (NAB's files, 5 minutes and more, lost 0.45 to
    /// 7 points of the standard profile with it).
    #[test]
    fn only_series_sampled_often_get_the_seasonal_shift() {
        for (step, on) in [(60, true), (120, true), (300, false)] {
            let samples = cycle_with_creep(8, step, |_| 0.0);
            let d = DetectorConfig::default().fit(&samples).unwrap();
            assert!(d.hourly.is_some());
            assert_eq!(d.seasonal_shift.is_some(), on, "a step of {step} s");
        }
    }

    /// With the hour under way kept apart, the hourly ranges are still every value's: a day
    /// observed after a refit leaves them as a refit on that day too would.
    #[test]
    fn the_hour_under_way_joins_its_range_when_the_next_begins() {
        let samples = cycle_with_creep(10, 60, |m| if m % 97 == 0 { 40.0 } else { 0.0 });
        let (fit, live) = samples.split_at(8 * 1440);
        let mut d = DetectorConfig::default().fit(fit).unwrap();
        for &s in live {
            d.observe(s);
        }
        let refit = DetectorConfig::default().fit(&samples).unwrap();
        let (Some(h), Some(ss)) = (&d.hourly, &d.seasonal_shift) else {
            panic!("no seasonal shift")
        };
        let (Some(want), Some(want_ss)) = (&refit.hourly, &refit.seasonal_shift) else {
            panic!("no seasonal shift after the refit")
        };
        // The refit's ranges come from its own window's values: compare the hours of the day
        // that both hold, widened by the hour under way.
        for hour in 0..24 {
            let t = Timestamp::from_secs(1_700_438_400 + hour * 3_600);
            let (lo, hi) = h.range(h.bin(t));
            let (want_lo, want_hi) = want.range(want.bin(t));
            assert_eq!(
                ss.with_today(lo, hi),
                want_ss.with_today(want_lo, want_hi),
                "hour {hour}"
            );
            assert_eq!(ss.reference(t), want_ss.reference(t), "hour {hour}");
        }
    }

    fn seasonal_stream(n: u64, step_s: i64) -> Vec<Sample> {
        (0..n)
            .map(|i| {
                let t = 1_700_000_000 + i as i64 * step_s;
                let day = std::f64::consts::TAU * (t.rem_euclid(86_400) as f64 / 86_400.0);
                Sample::new(Timestamp::from_secs(t), 100.0 + 20.0 * day.sin() + gauss(i))
            })
            .collect()
    }

    /// Regression: a daemon in push mode refits from its push buffer, which at 100,000 series
    /// holds under three hours of each. Refitted on that, a detector that had learnt a daily
    /// cycle from eight days lost it (two days are needed to consider one), and with it the
    /// hourly ranges that judge each hour by its own past. A refit on less history than the
    /// model in use needs keeps the model; a long enough one still refits.
    #[test]
    fn a_refit_on_too_short_a_history_keeps_the_seasonal_model() {
        let all = seasonal_stream(10 * 1440, 60);
        let (week, rest) = all.split_at(8 * 1440);
        let mut d = DetectorConfig::default().fit(week).unwrap();
        for &s in week {
            d.observe(s); // warmed up, as the scheduler does
        }
        // A slow cycle at a one-minute step: the level follows it best one step ahead, and the
        // cycle is evident (judged by the hour).
        assert!(d.selection().evident.daily > 0, "{:?}", d.selection());
        let kept = d.clone();
        let hours = &week[week.len() - 168..];
        // What those hours alone would choose: no cycle.
        let (short, _) = select_model(hours).unwrap();
        assert_eq!(short.evident, crate::Seasonality::NONE, "{short:?}");
        assert_eq!(
            d.refit(hours),
            Err(FitError::ShorterThanModel {
                needed_ms: 2 * 86_400_000,
                got_ms: 167 * 60_000,
            })
        );
        // It scores on as if nothing had happened.
        let mut twin = kept.clone();
        for &s in &rest[..720] {
            // Debug, where NaN equals NaN.
            assert_eq!(
                format!("{:?}", d.observe(s)),
                format!("{:?}", twin.observe(s))
            );
        }
        // Three days are enough to reconsider the cycle.
        let mut long = kept.clone();
        long.refit(&week[week.len() - 3 * 1440..]).unwrap();
        assert!(long.selection().evident.daily > 0, "{:?}", long.selection());
        assert_ne!(long, kept);
    }

    /// Regression (NAB `art_daily_jumpsdown`, `art_daily_nojump`): a nightly batch is a square
    /// wave, predicted one step ahead best by its last value, so no seasonal baseline is
    /// chosen; the night's level at 9 AM still went unscored, because per-hour ranges were kept
    /// only for series whose baseline was seasonal.
    #[test]
    fn a_square_wave_that_skips_its_high_phase_is_a_seasonality_break() {
        let step = 300;
        let level = |i: u64, skip: bool| {
            let hour = (i as i64 * step).rem_euclid(86_400) / 3_600;
            let high = (9..17).contains(&hour) && !skip;
            (if high { 80.0 } else { 20.0 }) + 2.0 * gauss(i)
        };
        let day = 86_400 / step as u64;
        let history: Vec<Sample> = (0..10 * day)
            .map(|i| Sample::new(Timestamp::from_secs(i as i64 * step), level(i, false)))
            .collect();
        let mut d = DetectorConfig::default().fit(&history).unwrap();
        assert!(
            d.selection().evident.daily > 0,
            "the daily cycle is evident: {:?}",
            d.selection()
        );
        // Day 11: the batch does not run.
        let mut worst = (0.0, None);
        for i in 10 * day..11 * day {
            let s = d.observe(Sample::new(
                Timestamp::from_secs(i as i64 * step),
                level(i, true),
            ));
            if s.score.get() > worst.0 {
                worst = (s.score.get(), s.reason);
            }
        }
        assert!(worst.0 >= Score::ALERT.get(), "{worst:?}");
        assert_eq!(worst.1, Some(Reason::SeasonalityBreak));
    }

    /// Regression (NAB `ec2_network_in_5abac7`): a series that idles near zero and bursts to
    /// about 5 M, each burst a little above the last. Its spread is near zero, so each new
    /// record was thousands of spreads beyond the range and paged; a record by a fraction of
    /// a percent of the range is not new.
    #[test]
    fn bursts_each_a_little_higher_than_the_last_do_not_page() {
        let step = 300;
        let value = |i: u64| {
            if i.is_multiple_of(97) {
                5.0e6 * (1.0 + 0.0005 * (i / 97) as f64)
            } else {
                100.0 + 10.0 * gauss(i)
            }
        };
        let history: Vec<Sample> = (0..3 * 288)
            .map(|i| Sample::new(Timestamp::from_secs(i as i64 * step), value(i)))
            .collect();
        let mut d = DetectorConfig::default().fit(&history).unwrap();
        let mut alerts = vec![];
        for i in 3 * 288..6 * 288 {
            let s = d.observe(Sample::new(Timestamp::from_secs(i as i64 * step), value(i)));
            if s.score >= Score::ALERT {
                alerts.push((i, s.value, s.reason));
            }
        }
        assert!(alerts.is_empty(), "{alerts:?}");
        // A burst twice as high is new.
        let s = d.observe(Sample::new(Timestamp::from_secs(6 * 288 * step), 1.0e7));
        assert!(s.score >= Score::ALERT, "{s:?}");
    }

    /// A series that starts to swing widely while every value stays inside its range (a
    /// flapping dependency): no value is new, only the volatility is. Before the volatility
    /// statistic nothing scored this.
    #[test]
    fn swings_inside_the_range_are_volatility() {
        let at = |i: u64| Timestamp::from_secs(1_700_000_000 + i as i64 * 60);
        let calm = |i: u64| 100.0 + 2.0 * gauss(i);
        let history: Vec<Sample> = (0..3 * 1440).map(|i| Sample::new(at(i), calm(i))).collect();
        let mut d = DetectorConfig::default().fit(&history).unwrap();
        // Three calm days observed: the reference needs whole days in it.
        for i in 3 * 1440..6 * 1440 {
            let s = d.observe(Sample::new(at(i), calm(i)));
            // (A rare new record may page as a level shift: the calibration tests bound that.)
            assert!(
                s.score < Score::ALERT || s.reason != Some(Reason::Volatility),
                "calm {i}: {s:?}"
            );
        }
        // ±5 around the level: 2.5 σ, inside the known range (about ±6 after the trim).
        let mut best = Scored::unknown(at(0), 0.0);
        for i in 6 * 1440..6 * 1440 + 120 {
            let v = if i % 2 == 0 { 105.0 } else { 95.0 };
            let s = d.observe(Sample::new(at(i), v));
            if s.score > best.score {
                best = s;
            }
        }
        assert!(best.score >= Score::ALERT, "{best:?}");
        assert_eq!(best.reason, Some(Reason::Volatility), "{best:?}");
    }

    /// Noise with three bursts in its history, fewer than the 0.1% the known range leaves
    /// out: a value as high as those bursts is not new alone, it is the second time in a row.
    #[test]
    fn a_lone_value_as_rare_as_the_windows_rarest_is_not_new_two_in_a_row_are() {
        let at = |i: u64| Timestamp::from_secs(1_700_000_000 + i as i64 * 60);
        let calm = |i: u64| 100.0 + gauss(i);
        let burst = |i: u64| [1000, 2500, 3700].contains(&i);
        let history: Vec<Sample> = (0..3 * 1440)
            .map(|i| Sample::new(at(i), if burst(i) { 108.0 } else { calm(i) }))
            .collect();
        let mut d = DetectorConfig::default().fit(&history).unwrap();
        assert!(d.hi < 105.0 && d.hi_full == 108.0, "{} {}", d.hi, d.hi_full);
        let mut i = 3 * 1440;
        // The next sample: `v`, or the calm series' value.
        let mut next = |d: &mut Detector, v: Option<f64>| {
            i += 1;
            d.observe(Sample::new(at(i), v.unwrap_or_else(|| calm(i))))
        };
        let calm_for = |next: &mut dyn FnMut(&mut Detector, Option<f64>) -> Scored,
                        d: &mut Detector| {
            for _ in 0..600 {
                next(d, None);
            }
        };
        calm_for(&mut next, &mut d);
        // Alone, at the height of the past bursts: nothing new.
        let lone = next(&mut d, Some(106.0));
        assert!(lone.score < Score::ALERT, "{lone:?}");
        calm_for(&mut next, &mut d);
        // Twice in a row: the second is new. Beyond everything ever seen, the first is.
        let first = next(&mut d, Some(106.0));
        let second = next(&mut d, Some(106.5));
        assert!(first.score < Score::ALERT, "{first:?}");
        assert!(second.score >= Score::ALERT, "{second:?}");
        // A record is measured from what was seen, lone values included: a hair above the
        // lone 108 is no news, though it is beyond everything the window held.
        calm_for(&mut next, &mut d);
        let lone = next(&mut d, Some(108.0));
        assert!(lone.score < Score::ALERT, "{lone:?}");
        calm_for(&mut next, &mut d);
        let hair = next(&mut d, Some(108.3));
        assert!(hair.score < Score::ALERT, "{hair:?}");
        calm_for(&mut next, &mut d);
        let record = next(&mut d, Some(112.0));
        assert!(record.score >= Score::ALERT, "{record:?}");
    }

    #[test]
    fn state_restores_exactly_mid_stream() {
        let data = seasonal_stream(6000, 300);
        let mut a = DetectorConfig::default().fit(&data[..3000]).unwrap();
        for s in &data[3000..4000] {
            a.observe(*s);
        }
        let bytes = postcard::to_stdvec(&a).unwrap();
        assert!(bytes.len() <= 4096, "{} bytes of state", bytes.len());
        let mut b: Detector = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(a, b);
        for s in &data[4000..] {
            let (x, y) = (a.observe(*s), b.observe(*s));
            assert_eq!(x.score.get().to_bits(), y.score.get().to_bits());
            assert_eq!(x.yhat.to_bits(), y.yhat.to_bits());
        }
        // JSON too (serde_json's `float_roundtrip` makes floats exact), for people reading
        // state files.
        let json = serde_json::to_string(&a).unwrap();
        let c: Detector = serde_json::from_str(&json).unwrap();
        assert_eq!(c, a);
    }

    #[test]
    fn hourly_ranges_and_volatility_days_keep_the_state_format_they_had() {
        // What the boxed struct of two `Vec`s and the `Vec` of days were, field for field:
        // state files written before the inline layouts must still load, and the same.
        #[derive(Serialize)]
        struct Before {
            period_ms: i64,
            lo: Vec<f32>,
            hi: Vec<f32>,
        }
        for hours in [24usize, 168] {
            let lo: Vec<f32> = (0..hours).map(|i| i as f32 - 3.5).collect();
            let hi: Vec<f32> = (0..hours).map(|i| 2.0 * i as f32).collect();
            let mut h = HourlyRange::empty(hours == 168);
            for (b, (l, u)) in h.bins_mut().iter_mut().zip(lo.iter().zip(&hi)) {
                *b = [*l, *u];
            }
            let before = Before {
                period_ms: hours as i64 * HOUR_MS,
                lo,
                hi,
            };
            let bytes = postcard::to_stdvec(&before).unwrap();
            assert_eq!(postcard::to_stdvec(&h).unwrap(), bytes);
            assert_eq!(postcard::from_bytes::<HourlyRange>(&bytes).unwrap(), h);
            // Lows and highs that do not fill the period, or a period of neither a day nor a
            // week, are refused.
            let mut short = before;
            short.lo.pop();
            let err = postcard::from_bytes::<HourlyRange>(&postcard::to_stdvec(&short).unwrap());
            assert!(err.is_err());
        }
        let odd = Before {
            period_ms: 2 * HOUR_MS,
            lo: vec![1.0, -3.0],
            hi: vec![2.0, 4.5],
        };
        assert!(postcard::from_bytes::<HourlyRange>(&postcard::to_stdvec(&odd).unwrap()).is_err());

        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Days(#[serde(with = "vol_days_seq")] [f32; VOL_DAYS]);
        let days: Vec<f32> = (0..VOL_DAYS).map(|d| d as f32 / 3.0).collect();
        let bytes = postcard::to_stdvec(&days).unwrap();
        let inline = Days(days.clone().try_into().unwrap());
        assert_eq!(postcard::to_stdvec(&inline).unwrap(), bytes);
        assert_eq!(postcard::from_bytes::<Days>(&bytes).unwrap(), inline);
        let short = postcard::to_stdvec(&days[1..]).unwrap();
        assert!(postcard::from_bytes::<Days>(&short).is_err());
    }

    #[test]
    fn state_stays_under_4_kib_with_every_component_on() {
        // Four weeks at two minutes with daily and weekly cycles: the weekly baseline, the
        // per-hour-of-week ranges and the seasonal shift are on, the largest state a series
        // can have.
        let data: Vec<Sample> = (0..20_160u64)
            .map(|i| {
                let t = 1_700_000_000 + i as i64 * 120;
                let day = std::f64::consts::TAU * (t.rem_euclid(86_400) as f64 / 86_400.0);
                let week = std::f64::consts::TAU * (t.rem_euclid(604_800) as f64 / 604_800.0);
                let v = 100.0 + 20.0 * day.sin() + 15.0 * week.sin() + gauss(i);
                Sample::new(Timestamp::from_secs(t), v)
            })
            .collect();
        let d = DetectorConfig::default().fit(&data).unwrap();
        assert!(d.selection().seasonality.weekly > 0, "{:?}", d.selection());
        assert!(d.hourly.as_ref().is_some_and(|h| h.bins().len() == 168));
        assert!(d.seasonal_shift.is_some());
        let bytes = postcard::to_stdvec(&d).unwrap().len();
        eprintln!("{bytes} bytes of state");
        assert!(bytes <= 4096, "{bytes} bytes of state");
    }

    #[test]
    fn nan_and_inf_are_not_learnt_and_do_not_poison_scores() {
        let mut d = DetectorConfig::default().fit(&[]).unwrap();
        for (i, s) in seasonal_stream(2000, 60).into_iter().enumerate() {
            let v = match i % 97 {
                0 => f64::NAN,
                1 => f64::INFINITY,
                2 => f64::NEG_INFINITY,
                _ => s.v,
            };
            let out = d.observe(Sample::new(s.t, v));
            assert!((0.0..=1.0).contains(&out.score.get()));
            if i > 100 {
                assert!(out.yhat.is_finite(), "row {i}: {out:?}");
            }
            // A lone unusable sample is not missing data: the series is not overdue.
            if !v.is_finite() {
                assert_eq!(out.reason, None, "row {i}");
            }
        }
    }

    #[test]
    fn a_stretch_of_nan_is_missing_data() {
        let mut d = DetectorConfig::default().fit(&[]).unwrap();
        let data = seasonal_stream(600, 60);
        let mut reasons = Vec::new();
        for (i, s) in data.iter().enumerate() {
            let v = if (400..430).contains(&i) {
                f64::NAN
            } else {
                s.v
            };
            reasons.push(d.observe(Sample::new(s.t, v)).reason);
        }
        assert_eq!(
            reasons[402], None,
            "two missing samples are not yet overdue"
        );
        assert_eq!(reasons[420], Some(Reason::MissingData));
        assert!(reasons[440].is_none_or(|r| r != Reason::MissingData));
    }

    #[test]
    fn tick_reports_an_overdue_series() {
        let mut d = DetectorConfig::default().fit(&[]).unwrap();
        let data = seasonal_stream(300, 60);
        for s in &data {
            d.observe(*s);
        }
        let last = data[data.len() - 1].t;
        assert_eq!(d.tick(last.add_millis(120_000)), None);
        let late = d
            .tick(last.add_millis(30 * 60_000))
            .expect("overdue after 30 steps");
        assert_eq!(late.reason, Some(Reason::MissingData));
        assert!(late.score >= Score::ALERT);
    }

    #[test]
    fn gaps_and_irregular_spacing_are_scored_calmly() {
        // Jittered steps (30-90 s) and a six-hour gap: no alert storm on healthy data.
        let mut d = DetectorConfig::default().fit(&[]).unwrap();
        let mut t = 1_700_000_000_000i64;
        let mut alerts = 0;
        for i in 0..6000u64 {
            t += 30_000 + (uniform(i + 99) * 60_000.0) as i64;
            if i == 3000 {
                t += 6 * 3_600_000;
            }
            let s = d.observe(Sample::new(Timestamp::from_millis(t), 50.0 + gauss(i)));
            if i > 100 && s.score >= Score::ALERT {
                alerts += 1;
            }
        }
        assert!(alerts <= 3, "{alerts} alerts");
    }

    #[test]
    fn out_of_order_samples_are_ignored() {
        let mut d = DetectorConfig::default().fit(&[]).unwrap();
        for i in 0..100 {
            d.observe(Sample::new(
                Timestamp::from_secs(i * 60),
                1.0 + gauss(i as u64),
            ));
        }
        let before = d.clone();
        let s = d.observe(Sample::new(Timestamp::from_secs(30), 1e9));
        assert_eq!(s.score, Score::ZERO);
        assert!(s.yhat.is_nan());
        assert_eq!(d, before);
    }

    #[test]
    fn direction_and_minimum_deviation_silence_what_they_should() {
        let run = |config: DetectorConfig, bump: f64| {
            let mut d = config.fit(&[]).unwrap();
            let mut peak: f64 = 0.0;
            for i in 0..1000u64 {
                let v = 100.0 + gauss(i) + if i == 900 { bump } else { 0.0 };
                let s = d.observe(Sample::new(Timestamp::from_secs(i as i64 * 60), v));
                if i == 900 {
                    peak = s.score.get();
                }
            }
            peak
        };
        let both = DetectorConfig::default();
        assert!(run(both, -30.0) >= 0.8);
        let above = DetectorConfig {
            direction: Direction::Above,
            ..both
        };
        assert!(run(above, -30.0) < 0.1);
        assert!(run(above, 30.0) >= 0.8);
        let wide = DetectorConfig {
            min_abs_deviation: 50.0,
            ..both
        };
        assert!(run(wide, 30.0) < 0.1);
        let rel = DetectorConfig {
            min_rel_deviation: 0.5,
            ..both
        };
        assert!(run(rel, 30.0) < 0.1);
    }

    #[test]
    fn bad_options_are_refused_with_the_option_named() {
        let bad = DetectorConfig {
            memory: 1.0,
            ..DetectorConfig::default()
        };
        let err = bad.fit(&[]).unwrap_err().to_string();
        assert!(err.contains("memory"), "{err}");
        let bad = DetectorConfig {
            min_abs_deviation: f64::NAN,
            ..DetectorConfig::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("min_abs_deviation")
        );
    }
}

/// The range of values seen in each hour of the day or of the week (UTC), in `f32` to keep
/// state small (a week of hours is 1.3 KiB).
///
/// Every sample reads and widens its hour's `[lo, hi]` pair, and at 100,000 series each level
/// of indirection is a cache miss: a boxed struct of two `Vec`s was three, and a tenth of the
/// push path's time. A day's 24 pairs therefore sit inline in the detector, next to the state
/// the sample reads anyway; a week's 168 (a series with a weekly cycle, fewer) in one
/// allocation, as inline they would grow every series' state by 1.3 KiB. The state format is
/// the one of that struct (`period_ms`, `lo`, `hi`), so state files stay readable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "HourlyRangeRepr", into = "HourlyRangeRepr")]
enum HourlyRange {
    Day([[f32; 2]; 24]),
    Week(Box<[[f32; 2]; 168]>),
}

/// [`HourlyRange`] as it is stored.
#[derive(Serialize, Deserialize)]
struct HourlyRangeRepr {
    period_ms: i64,
    lo: Vec<f32>,
    hi: Vec<f32>,
}

impl TryFrom<HourlyRangeRepr> for HourlyRange {
    type Error = String;

    fn try_from(r: HourlyRangeRepr) -> Result<Self, String> {
        let bins = (r.period_ms / HOUR_MS).max(0) as usize;
        let mut h = match bins {
            24 => Self::Day([[0.0; 2]; 24]),
            168 => Self::Week(Box::new([[0.0; 2]; 168])),
            _ => return Err(format!("hourly ranges: a period of {} ms", r.period_ms)),
        };
        if r.lo.len() != bins || r.hi.len() != bins {
            return Err(format!(
                "hourly ranges: {} lows and {} highs for {bins} hours",
                r.lo.len(),
                r.hi.len()
            ));
        }
        for ((b, lo), hi) in h.bins_mut().iter_mut().zip(r.lo).zip(r.hi) {
            *b = [lo, hi];
        }
        Ok(h)
    }
}

impl From<HourlyRange> for HourlyRangeRepr {
    fn from(h: HourlyRange) -> Self {
        let bins = h.bins();
        Self {
            period_ms: bins.len() as i64 * HOUR_MS,
            lo: bins.iter().map(|b| b[0]).collect(),
            hi: bins.iter().map(|b| b[1]).collect(),
        }
    }
}

const HOUR_MS: i64 = 3_600_000;

impl HourlyRange {
    /// Empty ranges for a period of a week when `weekly`, of a day otherwise.
    fn empty(weekly: bool) -> Self {
        const NONE: [f32; 2] = [f32::INFINITY, f32::NEG_INFINITY];
        if weekly {
            Self::Week(Box::new([NONE; 168]))
        } else {
            Self::Day([NONE; 24])
        }
    }

    fn bins(&self) -> &[[f32; 2]] {
        match self {
            Self::Day(b) => b,
            Self::Week(b) => &b[..],
        }
    }

    fn bins_mut(&mut self) -> &mut [[f32; 2]] {
        match self {
            Self::Day(b) => b,
            Self::Week(b) => &mut b[..],
        }
    }

    fn bin(&self, t: Timestamp) -> usize {
        let period = self.bins().len() as i64 * HOUR_MS;
        (t.millis().rem_euclid(period) / HOUR_MS) as usize
    }

    /// The range of hour `i` (from [`Self::bin`]).
    fn range(&self, i: usize) -> (f64, f64) {
        let [lo, hi] = self.bins().get(i).copied().unwrap_or([f32::NAN; 2]);
        (f64::from(lo), f64::from(hi))
    }

    fn widen(&mut self, i: usize, x: f64) {
        if let Some(b) = self.bins_mut().get_mut(i) {
            b[0] = b[0].min(x as f32);
            b[1] = b[1].max(x as f32);
        }
    }
}

/// Steps up to which a series gets the seasonal shift statistic: beyond, an hour holds too few
/// samples for a short mean of them to rise before the hour is over. On NAB (every file 5
/// minutes or coarser), running it at every step took the standard profile from 68.05 to
/// 60.9, and up to 5-minute steps to 67.6.
const SEASONAL_SHIFT_MAX_STEP_MS: i64 = 120_000;
/// Beyond its hour's reference by this many σ (the residuals' robust scale), a value counts.
const SEASONAL_SHIFT_COUNTS_FROM: f64 = 1.0;
/// Once the statistic's surprise falls below this, an excursion is over: the next is reported.
const SEASONAL_SHIFT_UNLATCH_BELOW: f64 = 1.0;
/// Samples by which the statistic's tail learns late (half an hour at a minute's step).
const SEASONAL_SHIFT_LAG: usize = 30;

/// A series that creeps away from what each hour of the day has shown on the days before: a
/// p99 latency that climbs from 0.34 s to 0.46 s over an hour, in noise of 0.008 s, on a series
/// whose daily cycle spans more than that.
///
/// The other statistics miss it for an hour. The level follows the creep, so the residual
/// stays small; the drift statistic's long mean holds the daily cycle itself, so its tail
/// treats the creep's gap as normal; and the hour's range, widened by each value as it came,
/// made each value new by a tenth of a unit at most.
///
/// So:
/// * **The hour under way is kept apart** (`today`), and joins the hour's range in
///   [`HourlyRange`] when the next hour begins. The contextual novelty statistic judges by
///   both together, as before.
/// * **The reference** is each hour of the day's range on the days before, without its most
///   extreme day on either side ([`SeasonalShift::reference`]).
/// * **The statistic** is a short mean (the level-shift statistic's span) of how far values
///   lie beyond the reference, in novelty units; a value counts while it lies beyond by one σ
///   or more, on the mean's side. Reported as [`Reason::Drift`], once per excursion.
/// * **Its tail learns half an hour late** ([`SEASONAL_SHIFT_LAG`]), so that a creep is judged
///   against what came before it.
///
/// Boxed in the detector, and only for series with a daily cycle sampled every two minutes or
/// more often: about 600 bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "SeasonalShiftRepr", into = "SeasonalShiftRepr")]
struct SeasonalShift {
    /// The hour under way (hours since the epoch; `i64::MIN` before the first) and the range
    /// of its values so far.
    hour: i64,
    today: [f32; 2],
    /// For each hour of the day (UTC), the two highest of the days' highest values in that
    /// hour and the two lowest of their lowest.
    days: [DayExtremes; 24],
    /// Short mean of the signed distance beyond the reference, in novelty units.
    mean: Ewma,
    tail: Tail,
    /// Whether this excursion beyond the reference was reported already.
    latched: bool,
    /// The statistic's last values, oldest at `next`, that the tail has yet to learn (NaN:
    /// none yet).
    pending: [f32; SEASONAL_SHIFT_LAG],
    next: u8,
}

/// The two highest and two lowest of the per-day extremes of one hour of the day.
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize)]
struct DayExtremes {
    hi: [f32; 2],
    lo: [f32; 2],
}

impl DayExtremes {
    const NONE: Self = Self {
        hi: [f32::NEG_INFINITY; 2],
        lo: [f32::INFINITY; 2],
    };

    fn add(&mut self, [lo, hi]: [f32; 2]) {
        if hi > self.hi[0] {
            self.hi = [hi, self.hi[0]];
        } else if hi > self.hi[1] {
            self.hi[1] = hi;
        }
        if lo < self.lo[0] {
            self.lo = [lo, self.lo[0]];
        } else if lo < self.lo[1] {
            self.lo[1] = lo;
        }
    }
}

/// What [`SeasonalShift::observe`] found for one value.
#[derive(Copy, Clone, Debug)]
struct Shifted {
    /// The statistic: the short mean, signed (positive above).
    mean: f64,
    /// Whether this value is beyond the reference by enough, on the mean's side.
    counts: bool,
    /// The reference: the hour's range on the days before.
    lo: f64,
    hi: f64,
}

const EMPTY_RANGE: [f32; 2] = [f32::INFINITY, f32::NEG_INFINITY];

impl SeasonalShift {
    fn new(memory: f64) -> Self {
        Self {
            hour: i64::MIN,
            today: EMPTY_RANGE,
            days: [DayExtremes::NONE; 24],
            mean: Ewma::new(),
            // Mostly zero, like the other novelty statistics.
            tail: Tail::new(0.0, 0.05, memory),
            latched: false,
            pending: [f32::NAN; SEASONAL_SHIFT_LAG],
            next: 0,
        }
    }

    /// Forgets the hours seen (a refit gathers them again from its history); keeps what was
    /// learnt of the statistic.
    fn clear(&mut self) {
        self.hour = i64::MIN;
        self.today = EMPTY_RANGE;
        self.days = [DayExtremes::NONE; 24];
    }

    /// Moves to the hour of `t`: the hour that ended joins its hour's range in `h`, and the
    /// reference.
    fn enter(&mut self, h: &mut HourlyRange, t: Timestamp) {
        let hour = t.millis().div_euclid(HOUR_MS);
        if hour == self.hour {
            return;
        }
        let [lo, hi] = self.today;
        if lo <= hi && self.hour != i64::MIN {
            let i = h.bin(Timestamp::from_millis(self.hour * HOUR_MS));
            h.widen(i, f64::from(lo));
            h.widen(i, f64::from(hi));
            self.days[hour_of_day(self.hour)].add(self.today);
        }
        self.hour = hour;
        self.today = EMPTY_RANGE;
    }

    fn widen_today(&mut self, x: f64) {
        self.today[0] = self.today[0].min(x as f32);
        self.today[1] = self.today[1].max(x as f32);
    }

    /// `[lo, hi]` widened by the hour's values so far.
    fn with_today(&self, lo: f64, hi: f64) -> (f64, f64) {
        let [a, b] = self.today;
        (lo.min(f64::from(a)), hi.max(f64::from(b)))
    }

    /// The range the hour of `t` showed on the days before, leaving out its most extreme day
    /// on each side: one outlier or past incident in that hour would otherwise hide a creep up
    /// to its height. Empty (`lo > hi`) with fewer than two days.
    fn reference(&self, t: Timestamp) -> (f64, f64) {
        let d = self.days[hour_of_day(t.millis().div_euclid(HOUR_MS))];
        (f64::from(d.lo[1]), f64::from(d.hi[1]))
    }

    /// Takes in value `x` at `t`, against the reference of its hour.
    fn observe(&mut self, alpha: Alpha, t: Timestamp, x: f64, unit: f64, sigma: f64) -> Shifted {
        let (lo, hi) = self.reference(t);
        let beyond = if lo <= hi {
            beyond_range(x, lo, hi)
        } else {
            0.0
        };
        let d = beyond / unit;
        let d = if d.is_finite() {
            d.clamp(-1e6, 1e6)
        } else {
            0.0
        };
        self.mean.push(alpha, d);
        let mean = self.mean.get();
        Shifted {
            mean,
            counts: beyond.abs() >= SEASONAL_SHIFT_COUNTS_FROM * sigma
                && d.signum() == mean.signum(),
            lo,
            hi,
        }
    }

    /// Queues `v` for the tail and returns the value it should learn now, if any.
    fn delay(&mut self, v: f64) -> Option<f64> {
        let i = usize::from(self.next) % SEASONAL_SHIFT_LAG;
        let old = std::mem::replace(&mut self.pending[i], v as f32);
        self.next = ((i + 1) % SEASONAL_SHIFT_LAG) as u8;
        (!old.is_nan()).then_some(f64::from(old))
    }
}

fn hour_of_day(hour: i64) -> usize {
    hour.rem_euclid(24) as usize
}

/// [`SeasonalShift`] as stored.
#[derive(Serialize, Deserialize)]
struct SeasonalShiftRepr {
    hour: i64,
    today: [f32; 2],
    days: Vec<DayExtremes>,
    mean: StoredEwma,
    tail: Tail,
    latched: bool,
    pending: Vec<f32>,
    next: u8,
}

impl TryFrom<SeasonalShiftRepr> for SeasonalShift {
    type Error = String;

    fn try_from(r: SeasonalShiftRepr) -> Result<Self, String> {
        let (days, pending) = (r.days.len(), r.pending.len());
        let bad = || format!("seasonal shift: {days} hours and {pending} pending values");
        if usize::from(r.next) >= SEASONAL_SHIFT_LAG {
            return Err(bad());
        }
        Ok(Self {
            hour: r.hour,
            today: r.today,
            days: r.days.try_into().map_err(|_| bad())?,
            mean: r.mean.into(),
            tail: r.tail,
            latched: r.latched,
            pending: r.pending.try_into().map_err(|_| bad())?,
            next: r.next,
        })
    }
}

impl From<SeasonalShift> for SeasonalShiftRepr {
    fn from(s: SeasonalShift) -> Self {
        Self {
            hour: s.hour,
            today: s.today,
            days: s.days.to_vec(),
            // The factor is the detector's shift span's; stored for the format's sake only.
            mean: s.mean.stored(Alpha::new(1.0)),
            tail: s.tail,
            latched: s.latched,
            pending: s.pending.to_vec(),
            next: s.next,
        }
    }
}

/// [`Detector`] as saved: the layout of state format version 4, field for field, so that
/// state files stay readable both ways. It holds what the detector now shares or derives (the
/// options, the averages' smoothing factors, the peak's decay); a load derives them again.
#[derive(Serialize, Deserialize)]
struct Stored<'a> {
    config: DetectorConfig,
    selection: Selection,
    baseline: Option<SeasonalBaseline>,
    level: f64,
    scale: StoredEwma,
    seen: u64,
    last_t: Option<Timestamp>,
    last_finite: Option<(Timestamp, f64)>,
    step_ms: StoredEwma,
    shift: StoredEwma,
    drift_fast: StoredEwma,
    drift_slow: StoredEwma,
    t_spike: Tail,
    t_shift: Tail,
    t_drift: Tail,
    t_range: Tail,
    t_context: Tail,
    hourly: Cow<'a, Option<HourlyRange>>,
    lo: f64,
    hi: f64,
    spread: f64,
    drift_known: bool,
    range_known: bool,
    run: u32,
    max_run: u32,
    changes: u32,
    recent_peak: f64,
    peak_decay: f64,
    outliers: i32,
    vol: StoredEwma,
    #[serde(with = "vol_days_seq")]
    vol_days: [f32; VOL_DAYS],
    vol_day: i64,
    vol_day_changes: u32,
    vol_hi: f64,
    t_vol: Tail,
    seasonal_shift: Cow<'a, Option<Box<SeasonalShift>>>,
    lo_full: f64,
    hi_full: f64,
    lo_seen: f64,
    hi_seen: f64,
    beyond_side: i8,
}

impl Serialize for Detector {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let t = &self.tuned;
        Stored {
            config: t.config,
            selection: self.selection,
            baseline: self.baseline,
            level: self.level,
            scale: self.scale.stored(t.scale),
            seen: self.seen,
            last_t: self.last_t,
            last_finite: self.last_finite,
            step_ms: self.step_ms.stored(STEP_ALPHA),
            shift: self.shift.stored(t.shift),
            drift_fast: self.drift_fast.stored(DRIFT_FAST_ALPHA),
            drift_slow: self.drift_slow.stored(DRIFT_SLOW_ALPHA),
            t_spike: self.t_spike,
            t_shift: self.t_shift,
            t_drift: self.t_drift,
            t_range: self.t_range,
            t_context: self.t_context,
            hourly: Cow::Borrowed(&self.hourly),
            lo: self.lo,
            hi: self.hi,
            spread: self.spread,
            drift_known: self.drift_known,
            range_known: self.range_known,
            run: self.run,
            max_run: self.max_run,
            changes: self.changes,
            recent_peak: self.recent_peak,
            peak_decay: t.peak_decay,
            outliers: self.outliers,
            vol: self.vol.stored(VOL_ALPHA),
            vol_days: self.vol_days,
            vol_day: self.vol_day,
            vol_day_changes: self.vol_day_changes,
            vol_hi: self.vol_hi,
            t_vol: self.t_vol,
            seasonal_shift: Cow::Borrowed(&self.seasonal_shift),
            lo_full: self.lo_full,
            hi_full: self.hi_full,
            lo_seen: self.lo_seen,
            hi_seen: self.hi_seen,
            beyond_side: self.beyond_side,
        }
        .serialize(s)
    }
}

impl From<Stored<'static>> for Detector {
    /// The stored factors and decay are dropped: they follow from the options.
    fn from(s: Stored<'static>) -> Self {
        Self {
            tuned: Tuned::of(s.config),
            selection: s.selection,
            baseline: s.baseline,
            level: s.level,
            scale: s.scale.into(),
            seen: s.seen,
            last_t: s.last_t,
            last_finite: s.last_finite,
            step_ms: s.step_ms.into(),
            shift: s.shift.into(),
            drift_fast: s.drift_fast.into(),
            drift_slow: s.drift_slow.into(),
            t_spike: s.t_spike,
            t_shift: s.t_shift,
            t_drift: s.t_drift,
            t_range: s.t_range,
            t_context: s.t_context,
            hourly: s.hourly.into_owned(),
            lo: s.lo,
            hi: s.hi,
            spread: s.spread,
            drift_known: s.drift_known,
            range_known: s.range_known,
            run: s.run,
            max_run: s.max_run,
            changes: s.changes,
            recent_peak: s.recent_peak,
            outliers: s.outliers,
            vol: s.vol.into(),
            vol_days: s.vol_days,
            vol_day: s.vol_day,
            vol_day_changes: s.vol_day_changes,
            vol_hi: s.vol_hi,
            t_vol: s.t_vol,
            seasonal_shift: s.seasonal_shift.into_owned(),
            lo_full: s.lo_full,
            hi_full: s.hi_full,
            lo_seen: s.lo_seen,
            hi_seen: s.hi_seen,
            beyond_side: s.beyond_side,
        }
    }
}

/// `[f32; VOL_DAYS]` (de)serialised as a sequence of `f32`, the format of the `Vec<f32>` it
/// replaced.
mod vol_days_seq {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serializer};

    use super::VOL_DAYS;

    pub(super) fn serialize<S: Serializer>(
        days: &[f32; VOL_DAYS],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(days)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<[f32; VOL_DAYS], D::Error> {
        let v = Vec::<f32>::deserialize(d)?;
        let n = v.len();
        v.try_into()
            .map_err(|_| D::Error::custom(format!("{n} days of volatility, expected {VOL_DAYS}")))
    }
}

/// How far `x` lies beyond `[lo, hi]`: positive above, negative below, 0 inside.
#[inline]
fn beyond_range(x: f64, lo: f64, hi: f64) -> f64 {
    if x > hi {
        x - hi
    } else if x < lo {
        x - lo
    } else {
        0.0
    }
}

/// The `ps`-quantiles of `values` (ascending `ps`), as `values[⌊(n−1)p⌋]` of the sorted values
/// would be, without sorting: each is selected in the prefix that holds everything below the
/// next one up, so the whole costs a few linear passes.
fn quantiles<const K: usize>(values: &mut [f64], ps: [f64; K]) -> [f64; K] {
    let n = values.len();
    let mut out = [f64::NAN; K];
    let mut end = n;
    for k in (0..K).rev() {
        let i = (((n - 1) as f64 * ps[k]) as usize).min(end.saturating_sub(1));
        let (_, v, _) = values[..end].select_nth_unstable_by(i, f64::total_cmp);
        out[k] = *v;
        end = i + 1;
    }
    out
}

/// A statistic's value for scoring: zero when it is off or the deviation is not admitted.
fn scored_if(raw: Option<f64>, admitted: bool) -> f64 {
    match raw {
        Some(v) if admitted => v,
        _ => 0.0,
    }
}

#[cfg(test)]
mod quantile_tests {
    use super::quantiles;

    #[test]
    fn quantiles_match_a_sort() {
        let mut v: Vec<f64> = (0..1001u64).map(|i| ((i * 7919) % 1001) as f64).collect();
        let mut sorted = v.clone();
        sorted.sort_by(f64::total_cmp);
        let ps = [0.001, 0.25, 0.75, 0.999];
        let want = ps.map(|p| sorted[((sorted.len() - 1) as f64 * p) as usize]);
        assert_eq!(quantiles(&mut v, ps), want);
    }
}
