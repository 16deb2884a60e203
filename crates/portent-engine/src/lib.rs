//! The engine: what drives detectors over series.
//!
//! * [`Scheduler`] ([`schedule`]): every (model, schedule, query) job of a config ([`Plan`]),
//!   advanced by [`Scheduler::step`]`(now, source)`. The clock is an argument, so `serve` (the
//!   wall clock) and `backtest` (a replayed one, [`Scheduler::replay`]) run the same code;
//! * [`JointJob`] ([`joint`]): a multivariate model's rows, its queries joined per entity
//!   (a pod) and scored by a model pooled over the entity's workload, run by the same step;
//! * [`HistorySource`] ([`source`]): where samples and fit history come from (Prometheus'
//!   `query_range` in the daemon, [`MemorySource`] for files and tests);
//! * [`PushBuffer`] ([`push`]): the samples Prometheus remote_writes to the daemon, bounded,
//!   matched to push queries by their selectors, read back as a [`HistorySource`];
//! * [`Store`] ([`store`]): the live state of every series, under 4 KiB each, and the latest
//!   verdicts for `/metrics` ([`Store::latest`]);
//! * [`save`] and [`load`] ([`persist`]): crash-safe snapshots of the store;
//! * [`IntervalTracker`] ([`intervals`]): a backtest's anomalous intervals from its verdicts;
//! * [`SeriesRunner`]: one series' detector with its own history buffer, for offline files
//!   (`portent detect`, NAB evaluation).
//!
//! ```
//! use portent_core::{Labels, Sample, Series, Timestamp};
//! use portent_engine::{Cadence, Job, MemorySource, Plan, Scheduler};
//! use portent_models::DetectorConfig;
//!
//! const MIN: i64 = 60_000;
//! let plan = Plan {
//!     jobs: vec![Job {
//!         model: "auto".into(),
//!         query: "up".into(),
//!         expr: "up".into(),
//!         step_ms: MIN,
//!         detector: DetectorConfig::default(),
//!         cadence: Cadence {
//!             fit_every_ms: 60 * MIN,
//!             fit_window_ms: 24 * 60 * MIN,
//!             score_every_ms: 5 * MIN,
//!         },
//!     }],
//!     joint: Vec::new(),
//!     retention_ms: 60 * MIN,
//! };
//! let mut source = MemorySource::new();
//! let samples = (0..600)
//!     .map(|i| Sample::new(Timestamp::from_millis(i * MIN), 1.0 + (i % 3) as f64))
//!     .collect();
//! let labels = Labels::new([("__name__", "up"), ("job", "node")])?;
//! source.insert("up", Series { labels, samples });
//!
//! let mut scheduler = Scheduler::new(plan)?;
//! let mut scored = 0;
//! scheduler.replay(
//!     Timestamp::from_millis(300 * MIN),
//!     Timestamp::from_millis(600 * MIN),
//!     &mut source,
//!     |report| scored += report.samples_scored,
//! );
//! // The first tick warms the series up on [0, 295) and scores its window [295, 300]; the
//! // next ones score what came since, up to the last sample at 599.
//! assert_eq!(scored, 305);
//! let latest: Vec<_> = scheduler.store().latest().map(|l| l.output_labels()).collect();
//! assert_eq!(latest[0].to_string(), r#"up{job="node", model="auto", query="up"}"#);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! One series through a [`SeriesRunner`]:
//!
//! ```
//! use portent_core::{Sample, Timestamp};
//! use portent_engine::{RefitPolicy, SeriesRunner};
//! use portent_models::DetectorConfig;
//!
//! let mut r = SeriesRunner::new(DetectorConfig::default(), RefitPolicy::default()).unwrap();
//! for i in 0..100 {
//!     let scored = r.push(Sample::new(Timestamp::from_secs(i * 60), 1.0 + (i % 5) as f64));
//!     assert!((0.0..=1.0).contains(&scored.score.get()));
//! }
//! ```

pub mod intervals;
pub mod joint;
pub mod persist;
pub mod push;
pub mod schedule;
pub mod source;
pub mod store;

pub use intervals::{Interval, IntervalTracker};
pub use joint::{Feature, JointJob, JointLatest, WARM_UP_MS, sustained};
pub use persist::{PersistError, SaveStats, load, save};
pub use push::{IngestStats, NotAPushQuery, PushBuffer, PushLimits, PushQuery, Selector};
pub use schedule::{
    Cadence, Job, Plan, PlanError, Request, SINK_CHUNK, Scheduler, ScoreSink, SourceError,
    StepReport, StepScore,
};
pub use source::{Hint, HistorySource, MemorySource, RangeQuery};
pub use store::{Entry, Latest, Store};

use std::collections::VecDeque;

use portent_core::{Detect, Fit, FitError, Sample, Scored, Timestamp};
use portent_models::{Detector, DetectorConfig};
use serde::{Deserialize, Serialize};

/// When to refit and on how much history.
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RefitPolicy {
    /// History kept for refits, in ms.
    pub fit_window_ms: i64,
    /// Refit at least this often, in ms of series time.
    pub refit_every_ms: i64,
    /// Usable samples needed before the first fit.
    pub min_samples: usize,
}

impl Default for RefitPolicy {
    /// Four weeks of history (two weekly cycles and then some), a refit a day.
    fn default() -> Self {
        Self {
            fit_window_ms: 28 * 86_400_000,
            refit_every_ms: 86_400_000,
            min_samples: 48,
        }
    }
}

/// One series' detector, its history and its refit schedule.
#[derive(Debug)]
pub struct SeriesRunner {
    detector: Detector,
    policy: RefitPolicy,
    history: VecDeque<Sample>,
    usable: usize,
    first: Option<Timestamp>,
    last_fit: Option<Timestamp>,
    fits: u32,
}

impl SeriesRunner {
    /// A runner for a series not seen before.
    pub fn new(config: DetectorConfig, policy: RefitPolicy) -> Result<Self, FitError> {
        Ok(Self {
            detector: config.fit(&[])?,
            policy,
            history: VecDeque::new(),
            usable: 0,
            first: None,
            last_fit: None,
            fits: 0,
        })
    }

    /// Scores `sample`, learns from it, and refits when the schedule says so.
    pub fn push(&mut self, sample: Sample) -> Scored {
        let scored = self.detector.observe(sample);
        if self.history.back().is_some_and(|last| sample.t <= last.t) {
            return scored; // out of order: scored as unknown by the detector, not kept
        }
        self.first.get_or_insert(sample.t);
        self.history.push_back(sample);
        if sample.is_finite() {
            self.usable += 1;
        }
        let horizon = sample.t.add_millis(-self.policy.fit_window_ms);
        while self.history.front().is_some_and(|s| s.t < horizon) {
            if let Some(old) = self.history.pop_front()
                && old.is_finite()
            {
                self.usable -= 1;
            }
        }
        if self.refit_due(sample.t) {
            let h = self.history.make_contiguous();
            // A failed refit keeps the previous model: it only means too little usable data.
            if self.detector.refit(h).is_ok() {
                self.fits += 1;
            }
            self.last_fit = Some(sample.t);
        }
        scored
    }

    /// Whether a refit is due at `now`: once there is enough history, then each time the
    /// history has doubled in span (so a new series gets a good model quickly), then on the
    /// regular schedule.
    fn refit_due(&self, now: Timestamp) -> bool {
        if self.usable < self.policy.min_samples {
            return false;
        }
        let (Some(first), Some(last_fit)) = (self.first, self.last_fit) else {
            return true;
        };
        let since_fit = now.millis_since(last_fit);
        let age = now.millis_since(first);
        since_fit >= self.policy.refit_every_ms.min(age / 2)
    }

    /// Reports missing data if the series is overdue at `now`.
    pub fn tick(&mut self, now: Timestamp) -> Option<Scored> {
        self.detector.tick(now)
    }

    /// The detector, for inspection and persistence.
    pub fn detector(&self) -> &Detector {
        &self.detector
    }

    /// How many refits succeeded.
    pub fn fits(&self) -> u32 {
        self.fits
    }
}
