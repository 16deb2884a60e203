//! The scheduler: one step function for live operation, backtests and replays.
//!
//! A [`Plan`] lists the jobs of a config: each (model, schedule, query) triple, with the query's
//! expression and step, the model's detector options and the schedule's cadence. The
//! [`Scheduler`] owns the plan and the [`Store`] and advances both with
//! [`Scheduler::step`]`(now, source)`. The clock is an argument: the daemon passes the wall
//! clock, a backtest a simulated one ([`Scheduler::replay`]), so both run the same code.
//!
//! At each job's score tick (every `score_every`, aligned to the epoch), the step reads the
//! query's samples since its last score tick and, per series, scores every sample newer than the
//! last one scored, in time order, each scored then learnt. A series seen for the first time is
//! warmed up first: fitted on up to `fit_window` of its history, which the detector then replays
//! (without reporting) to learn its level, scale and tails. Series absent from the answer are
//! asked whether they are overdue (missing data), and those unseen for the retention expire.
//! At each fit tick (every `fit_every`) every tracked series is refitted from `fit_window` of
//! history, up to the last sample it scored, so that a fit never sees the future.
//!
//! A source error is counted in the [`StepReport`] and changes no state: a score tick that
//! failed is caught up by the next one (it reads from the last successful tick), a fit tick that
//! failed is retried at the next score tick, and nothing expires while the source is
//! down.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use portent_core::{
    Detect, Fit, FitError, Labels, Sample, Scored, Series, Timestamp, is_stale_marker,
};
use portent_models::{Detector, DetectorConfig};

use crate::joint::{Context, Feature, JointJob, JointLatest, JointRun, fit_pools};
use crate::source::{HistorySource, RangeQuery};
use crate::store::{Entry, Store};

/// How often a job fits and scores, in ms.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Cadence {
    /// Refit every this long.
    pub fit_every_ms: i64,
    /// Fits read this much history.
    pub fit_window_ms: i64,
    /// Score new samples every this long.
    pub score_every_ms: i64,
}

/// One model scoring one query on one schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    /// The model alias.
    pub model: String,
    /// The query alias.
    pub query: String,
    /// The query's PromQL expression.
    pub expr: String,
    /// The query's resolution, in ms.
    pub step_ms: i64,
    /// The model's detector options.
    pub detector: DetectorConfig,
    /// The schedule.
    pub cadence: Cadence,
}

/// What the scheduler runs: its jobs and how long unseen series are kept.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The jobs, in config order (models by alias, then their schedules, then their queries).
    pub jobs: Vec<Job>,
    /// The multivariate jobs (one per multivariate model and schedule), run after `jobs` at
    /// each step so that they combine the univariate verdicts of the same tick.
    pub joint: Vec<JointJob>,
    /// A series unseen this long, in ms, is forgotten.
    pub retention_ms: i64,
}

/// A plan that cannot run.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// A model's options are refused by the detector.
    #[error("models.{model}: {error}")]
    Model {
        /// The model alias.
        model: String,
        /// Why.
        error: FitError,
    },
    /// A duration is zero or negative, or a query's step is.
    #[error("{0}: must be positive")]
    NotPositive(String),
}

fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Plan {
    /// The jobs of a validated config.
    pub fn from_config(config: &portent_config::Config) -> Result<Plan, PlanError> {
        let mut jobs = Vec::new();
        let mut joint = Vec::new();
        for (model_alias, model) in &config.models {
            let auto = match &model.kind {
                portent_config::ModelKind::Auto(auto) => auto,
                portent_config::ModelKind::Joint(j) => {
                    let features: Vec<Feature> = config
                        .queries_of(model)
                        .map(|(alias, q)| Feature {
                            query: alias.to_string(),
                            expr: q.expr.clone(),
                        })
                        .collect();
                    // Validation made every step equal.
                    let step_ms = config
                        .queries_of(model)
                        .map(|(_, q)| millis(q.step))
                        .max()
                        .unwrap_or(0);
                    for (_, schedule) in config.schedules_of(model) {
                        joint.push(JointJob {
                            model: model_alias.to_string(),
                            method: j.method,
                            features: features.clone(),
                            step_ms,
                            join_on: j.join_on.clone(),
                            pool_by: j.pool_by.clone(),
                            cadence: Cadence {
                                fit_every_ms: millis(schedule.fit_every),
                                fit_window_ms: millis(schedule.fit_window),
                                score_every_ms: millis(schedule.score_every),
                            },
                        });
                    }
                    continue;
                }
            };
            let detector = DetectorConfig {
                direction: auto.direction,
                min_abs_deviation: auto.min_abs_deviation,
                min_rel_deviation: auto.min_rel_deviation,
                ..DetectorConfig::default()
            };
            for (_, schedule) in config.schedules_of(model) {
                for (query_alias, query) in config.queries_of(model) {
                    jobs.push(Job {
                        model: model_alias.to_string(),
                        query: query_alias.to_string(),
                        expr: query.expr.clone(),
                        step_ms: millis(query.step),
                        detector,
                        cadence: Cadence {
                            fit_every_ms: millis(schedule.fit_every),
                            fit_window_ms: millis(schedule.fit_window),
                            score_every_ms: millis(schedule.score_every),
                        },
                    });
                }
            }
        }
        let plan = Plan {
            jobs,
            joint,
            retention_ms: millis(config.storage.series_retention),
        };
        plan.validate()?;
        Ok(plan)
    }

    /// Checks detector options and that every duration is positive.
    pub fn validate(&self) -> Result<(), PlanError> {
        if self.retention_ms <= 0 {
            return Err(PlanError::NotPositive("storage.series_retention".into()));
        }
        for j in &self.jobs {
            j.detector.validate().map_err(|error| PlanError::Model {
                model: j.model.clone(),
                error,
            })?;
            let c = j.cadence;
            for (name, v) in [
                ("fit_every", c.fit_every_ms),
                ("fit_window", c.fit_window_ms),
                ("score_every", c.score_every_ms),
            ] {
                if v <= 0 {
                    return Err(PlanError::NotPositive(format!(
                        "schedules of {}: {name}",
                        j.model
                    )));
                }
            }
            if j.step_ms <= 0 {
                return Err(PlanError::NotPositive(format!("queries.{}.step", j.query)));
            }
        }
        for j in &self.joint {
            let c = j.cadence;
            if c.fit_every_ms <= 0 || c.fit_window_ms <= 0 || c.score_every_ms <= 0 {
                return Err(PlanError::NotPositive(format!("schedules of {}", j.model)));
            }
            if j.step_ms <= 0 {
                return Err(PlanError::NotPositive(format!(
                    "steps of the queries of {}",
                    j.model
                )));
            }
            if j.features.len() < 2 || j.join_on.is_empty() {
                return Err(PlanError::Model {
                    model: j.model.clone(),
                    error: FitError::Config(
                        "a multivariate model needs two queries or more and join_on labels".into(),
                    ),
                });
            }
        }
        Ok(())
    }
}

/// Which request to the source failed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// New samples to score.
    Score,
    /// History to warm new series up on.
    WarmUp,
    /// History to refit on.
    Fit,
}

impl Request {
    /// The name used in logs and self-metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Request::Score => "score",
            Request::WarmUp => "warm_up",
            Request::Fit => "fit",
        }
    }
}

/// A source request that failed. The state it would have changed is unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceError {
    /// The model alias of the job.
    pub model: String,
    /// The query alias.
    pub query: String,
    /// What was asked.
    pub request: Request,
    /// The source's message.
    pub message: String,
}

/// One verdict given during a step (when recording, see [`Scheduler::record_scores`], or
/// to a sink, see [`Scheduler::step_into`]).
#[derive(Clone, Debug, PartialEq)]
pub struct StepScore {
    /// The model alias.
    pub model: Arc<str>,
    /// The query alias.
    pub query: Arc<str>,
    /// The series.
    pub labels: Labels,
    /// The verdict.
    pub scored: Scored,
    /// Whether the series may be news to whoever keeps what its labels alone say (where its
    /// pod runs, for the incidents): true on the first tick that reports it in this process
    /// (it is new, or was restored from the state file), and always for multivariate
    /// entities. Learning that from every verdict again, at 100,000 series, was a tenth of
    /// the daemon's CPU.
    pub first: bool,
}

/// What one step did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepReport {
    /// The clock the step ran at.
    pub now: Timestamp,
    /// Jobs whose score tick ran (successfully or not).
    pub score_ticks: usize,
    /// Jobs whose fit tick ran (successfully or not).
    pub fit_ticks: usize,
    /// Samples scored.
    pub samples_scored: usize,
    /// Series with at least one sample scored.
    pub series_scored: usize,
    /// Rows scored by multivariate jobs.
    pub joint_rows_scored: usize,
    /// Missing-data verdicts given to series absent from the answer.
    pub missing: usize,
    /// The queries whose score tick found most of their series overdue at once (see
    /// [`is_source_gap`]): no missing-data verdicts were given.
    pub source_gaps: Vec<Arc<str>>,
    /// Series forgotten because the source marked them ended (a Prometheus stale marker).
    pub ended: usize,
    /// Series refitted (fit ticks) or fitted on their history (new series).
    pub fitted: usize,
    /// Fits that failed (too little usable history): the detector kept its previous model.
    pub fit_failures: usize,
    /// New series tracked.
    pub created: usize,
    /// Series forgotten after the retention.
    pub expired: usize,
    /// Source requests that failed.
    pub errors: Vec<SourceError>,
    /// Time spent in score ticks (reading, warming new series up, scoring), for the
    /// `score duration` self-metric.
    pub score_time: Duration,
    /// Time spent in fit ticks (reading history, refitting).
    pub fit_time: Duration,
    /// Every verdict, when recording; empty otherwise, and after [`Scheduler::step_into`],
    /// whose sink took them.
    pub scores: Vec<StepScore>,
    /// Samples scored by each job (indexed as [`Plan::jobs`]), so that a caller can count
    /// them by source.
    pub samples_scored_by_job: Vec<usize>,
}

/// Per-job progress.
#[derive(Copy, Clone, Debug, Default)]
struct JobState {
    group: usize,
    /// When the next score tick is due; `None`: at the first step.
    next_score: Option<Timestamp>,
    /// When the next fit tick is due; `None`: set at the first step to the next tick of
    /// `fit_every` (aligned to the epoch, so restarts do not postpone fits): new series are
    /// fitted when first seen, restored ones were fitted before the restart.
    next_fit: Option<Timestamp>,
    /// The clock of the last successful score tick: the next one reads from there.
    scored_until: Option<Timestamp>,
}

/// History a new series replays into its detector after fitting, at most: two detector
/// memories, enough for its level, scale and tails, and a bound on the cost of warming up a
/// million series on start.
pub const WARM_UP_SAMPLES: usize = 4_000;

/// Verdicts handed to a [`Scheduler::step_into`] sink at a time: small next to a tick of
/// 100,000 series, whose verdicts held at once (128 bytes each) were most of the daemon's
/// peak over its resident memory.
pub const SINK_CHUNK: usize = 4_096;

/// Where a step's verdicts go: nowhere, into [`StepReport::scores`], or to a caller's sink
/// [`SINK_CHUNK`] at a time.
pub(crate) struct Recorder<'s> {
    on: bool,
    sink: Option<&'s mut ScoreSink<'s>>,
}

/// What [`Scheduler::step_into`] hands verdicts to; it may take them out of the vector.
pub type ScoreSink<'s> = dyn FnMut(&mut Vec<StepScore>) + 's;

impl Recorder<'_> {
    /// Makes room for a tick of `n` verdicts at once (in the report), or a chunk (for a sink).
    fn reserve(&self, report: &mut StepReport, n: usize) {
        if self.on {
            // Grown by doubling, the vector and its old copies peaked at 34 MB at 100,000
            // series, and resident memory keeps what the peak took.
            let more = match self.sink {
                Some(_) => SINK_CHUNK.saturating_sub(report.scores.len()),
                None => n,
            };
            report.scores.reserve(more);
        }
    }

    /// Records the verdict `make` builds, if recording (building one costs a clone of its
    /// labels), handing a full chunk to the sink.
    pub(crate) fn push(&mut self, report: &mut StepReport, make: impl FnOnce() -> StepScore) {
        if !self.on {
            return;
        }
        report.scores.push(make());
        if report.scores.len() >= SINK_CHUNK {
            self.flush(report);
        }
    }

    /// Hands what the report holds to the sink, if there is one.
    fn flush(&mut self, report: &mut StepReport) {
        if let Some(sink) = self.sink.as_mut()
            && !report.scores.is_empty()
        {
            sink(&mut report.scores);
            report.scores.clear();
        }
    }
}

/// The first tick of `every` strictly after `now`.
fn next_tick(now: Timestamp, every: i64) -> Timestamp {
    let n = now.millis().div_euclid(every);
    Timestamp::from_millis(n.saturating_add(1).saturating_mul(every))
}

/// Drives every job over the store. See the module docs.
#[derive(Clone, Debug)]
pub struct Scheduler {
    plan: Plan,
    store: Store,
    jobs: Vec<JobState>,
    /// The multivariate jobs' progress and entities, indexed as [`Plan::joint`]. Their pools'
    /// models live in the store, and so survive a restart; the entities do not (a restart
    /// scores from the tick before it, not from each entity's last row).
    joint: Vec<JointRun>,
    record: bool,
}

impl Scheduler {
    /// A scheduler with no state yet.
    pub fn new(plan: Plan) -> Result<Self, PlanError> {
        Self::with_store(plan, Store::new()).map(|(s, _)| s)
    }

    /// A scheduler resuming from `store` (loaded from disk); also returns how many of its series
    /// were dropped because their (model, query) pair is no longer in the plan.
    pub fn with_store(plan: Plan, mut store: Store) -> Result<(Self, usize), PlanError> {
        plan.validate()?;
        let dropped =
            store.retain_groups(|m, q| plan.jobs.iter().any(|j| j.model == m && j.query == q));
        store.retain_pools(|m| plan.joint.iter().any(|j| j.model == m));
        let jobs = plan
            .jobs
            .iter()
            .map(|j| JobState {
                group: store.group_id(&j.model, &j.query),
                ..JobState::default()
            })
            .collect();
        let joint = vec![JointRun::default(); plan.joint.len()];
        Ok((
            Self {
                plan,
                store,
                jobs,
                joint,
                record: false,
            },
            dropped,
        ))
    }

    /// Whether steps return every verdict in [`StepReport::scores`] (for backtests and
    /// tests); off by default. The daemon hands them to its consumers a chunk at a time
    /// instead ([`Scheduler::step_into`]), and reads the latest from the store.
    pub fn record_scores(&mut self, on: bool) {
        self.record = on;
    }

    /// The plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The state of every series: for the exposition ([`Store::latest`]) and for saving.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Replaces the plan (a reloaded config), keeping the state of every (model, query) pair
    /// the new plan still has and the progress of every job it still has; returns how many
    /// series were dropped.
    pub fn set_plan(&mut self, plan: Plan) -> Result<usize, PlanError> {
        let store = std::mem::take(&mut self.store);
        let (mut next, dropped) = Self::with_store(plan, store)?;
        for (i, j) in next.plan.jobs.iter().enumerate() {
            if let Some(old) = self.plan.jobs.iter().position(|o| o == j) {
                next.jobs[i] = JobState {
                    group: next.jobs[i].group,
                    ..self.jobs[old]
                };
            }
        }
        for (i, j) in next.plan.joint.iter().enumerate() {
            if let Some(old) = self.plan.joint.iter().position(|o| o == j) {
                next.joint[i] = std::mem::take(&mut self.joint[old]);
            }
        }
        next.record = self.record;
        *self = next;
        Ok(dropped)
    }

    /// When the next tick of any job is due; `None` without jobs. Before the first step every
    /// job is due at once.
    pub fn next_due(&self) -> Option<Timestamp> {
        let ticks = |next_score: Option<Timestamp>, next_fit: Option<Timestamp>| match next_score {
            None => vec![Timestamp::from_millis(i64::MIN)],
            Some(s) => std::iter::once(s).chain(next_fit).collect(),
        };
        self.jobs
            .iter()
            .flat_map(|j| ticks(j.next_score, j.next_fit))
            .chain(
                self.joint
                    .iter()
                    .flat_map(|j| ticks(j.next_score, j.next_fit)),
            )
            .min()
    }

    /// Every entity's latest multivariate verdict, with each feature's share of it.
    pub fn joint_latest(&self) -> impl Iterator<Item = JointLatest<'_>> {
        self.plan
            .joint
            .iter()
            .zip(&self.joint)
            .flat_map(|(job, run)| run.latest(job))
    }

    /// The latest verdict of multivariate model `model` for the entity `labels`: one lookup,
    /// where [`Scheduler::joint_latest`] walks every entity.
    pub fn joint_latest_of(&self, model: &str, labels: &Labels) -> Option<JointLatest<'_>> {
        self.plan
            .joint
            .iter()
            .zip(&self.joint)
            .find(|(job, _)| job.model == model)
            .and_then(|(job, run)| run.latest_of(job, labels))
    }

    /// Series and multivariate entities tracked.
    pub fn tracked(&self) -> usize {
        self.store.len() + self.joint.iter().map(JointRun::len).sum::<usize>()
    }

    /// Runs every tick due at `now`: score ticks first, then fit ticks (which then include the
    /// samples just scored). Never fails: source errors are in the report.
    pub fn step<S: HistorySource + ?Sized>(
        &mut self,
        now: Timestamp,
        source: &mut S,
    ) -> StepReport {
        let rec = Recorder {
            on: self.record,
            sink: None,
        };
        self.step_with(now, source, rec)
    }

    /// [`Scheduler::step`] that hands every verdict to `sink`, in chunks of at most
    /// [`SINK_CHUNK`], as the step gives them, whether or not [`Scheduler::record_scores`]
    /// is on; the report's `scores` come back empty. A caller that keeps a small part of each
    /// verdict never holds a whole tick's verdicts at once.
    ///
    /// The sink runs while the step is under way, with the source in the middle of a read
    /// (a push buffer is locked then): it must not call back into the scheduler or the source.
    pub fn step_into<S: HistorySource + ?Sized>(
        &mut self,
        now: Timestamp,
        source: &mut S,
        sink: &mut ScoreSink<'_>,
    ) -> StepReport {
        let rec = Recorder {
            on: true,
            sink: Some(sink),
        };
        self.step_with(now, source, rec)
    }

    fn step_with<S: HistorySource + ?Sized>(
        &mut self,
        now: Timestamp,
        source: &mut S,
        mut rec: Recorder<'_>,
    ) -> StepReport {
        let mut report = StepReport {
            now,
            samples_scored_by_job: vec![0; self.jobs.len()],
            ..StepReport::default()
        };
        for i in 0..self.jobs.len() {
            let cadence = self.plan.jobs[i].cadence;
            if self.jobs[i].next_score.is_none_or(|t| now >= t) {
                report.score_ticks += 1;
                let started = Instant::now();
                let before = report.samples_scored;
                self.score(i, now, source, &mut rec, &mut report);
                report.samples_scored_by_job[i] = report.samples_scored - before;
                report.score_time += started.elapsed();
                self.jobs[i].next_score = Some(next_tick(now, cadence.score_every_ms));
            }
            match self.jobs[i].next_fit {
                None => self.jobs[i].next_fit = Some(next_tick(now, cadence.fit_every_ms)),
                Some(t) if now >= t => {
                    report.fit_ticks += 1;
                    let started = Instant::now();
                    // A fit the source failed is retried at the next score tick.
                    let every = if self.fit(i, now, source, &mut report) {
                        cadence.fit_every_ms
                    } else {
                        cadence.score_every_ms
                    };
                    report.fit_time += started.elapsed();
                    self.jobs[i].next_fit = Some(next_tick(now, every));
                }
                Some(_) => {}
            }
        }
        for (job, run) in self.plan.joint.iter().zip(&mut self.joint) {
            let cadence = job.cadence;
            if run.next_score.is_none_or(|t| now >= t) {
                report.score_ticks += 1;
                let started = Instant::now();
                let mut cx = Context {
                    store: &mut self.store,
                    retention_ms: self.plan.retention_ms,
                    rec: &mut rec,
                };
                run.score(job, now, source, &mut cx, &mut report);
                report.score_time += started.elapsed();
                run.next_score = Some(next_tick(now, cadence.score_every_ms));
            }
            match run.next_fit {
                None => run.next_fit = Some(next_tick(now, cadence.fit_every_ms)),
                Some(t) if now >= t => {
                    report.fit_ticks += 1;
                    let started = Instant::now();
                    let upto = now.millis().div_euclid(job.step_ms);
                    let every =
                        if fit_pools(job, &mut self.store, None, now, upto, source, &mut report) {
                            cadence.fit_every_ms
                        } else {
                            cadence.score_every_ms
                        };
                    report.fit_time += started.elapsed();
                    run.next_fit = Some(next_tick(now, every));
                }
                Some(_) => {}
            }
        }
        rec.flush(&mut report);
        report
    }

    /// Steps at every due tick in `[from, to]`, calling `each` with each report: a backtest or
    /// replay over a simulated clock.
    pub fn replay<S: HistorySource + ?Sized>(
        &mut self,
        from: Timestamp,
        to: Timestamp,
        source: &mut S,
        mut each: impl FnMut(&StepReport),
    ) {
        let mut now = from;
        while now <= to {
            let report = self.step(now, source);
            each(&report);
            match self.next_due() {
                Some(t) => now = t.max(now.add_millis(1)),
                None => break,
            }
        }
    }

    fn error<E: std::fmt::Display>(&self, i: usize, request: Request, e: &E) -> SourceError {
        let job = &self.plan.jobs[i];
        SourceError {
            model: job.model.clone(),
            query: job.query.clone(),
            request,
            message: e.to_string(),
        }
    }

    fn score<S: HistorySource + ?Sized>(
        &mut self,
        i: usize,
        now: Timestamp,
        source: &mut S,
        rec: &mut Recorder<'_>,
        report: &mut StepReport,
    ) {
        let job = &self.plan.jobs[i];
        let state = self.jobs[i];
        let oldest = now.add_millis(-job.cadence.fit_window_ms);
        // After a restart, read from the oldest sample a restored series has not scored yet.
        let from = match state.scored_until {
            Some(t) => t,
            None => self
                .store
                .group(state.group)
                .values()
                .filter_map(|e| e.last_scored)
                .min()
                .unwrap_or(Timestamp::from_millis(i64::MAX))
                .min(now.add_millis(-job.cadence.score_every_ms)),
        }
        .max(oldest);
        let q = RangeQuery {
            query: &job.query,
            expr: &job.expr,
            start: from,
            end: now,
            step_ms: job.step_ms,
            request: Request::Score,
        };
        let group = self.store.group_mut(state.group);
        // A verdict per tracked series, most ticks.
        rec.reserve(report, group.len());
        let (model, query) = (group.model_arc(), group.query_arc());
        let emit = |labels: &Labels,
                    scored: Scored,
                    first: bool,
                    rec: &mut Recorder<'_>,
                    report: &mut StepReport| {
            rec.push(report, || StepScore {
                model: model.clone(),
                query: query.clone(),
                labels: labels.clone(),
                scored,
                first,
            });
        };
        let mut new = Vec::new();
        // Series the source says ended (a trailing stale marker): scored up to the marker,
        // then forgotten, so a pod deleted by a rollout is not reported missing for the
        // retention. One that comes back is new again and warms up on its history.
        let mut ended = Vec::new();
        let mut live = Vec::new();
        let visited = source.visit_range(&q, &mut |labels, samples, hint| {
            let is_ended = samples.last().is_some_and(|s| is_stale_marker(s.v));
            if is_ended {
                ended.push(labels.clone());
            }
            let samples = if samples.iter().any(|s| is_stale_marker(s.v)) {
                live.clear();
                live.extend(samples.iter().filter(|s| !is_stale_marker(s.v)));
                &live[..]
            } else {
                samples
            };
            // Slots are in the order the push buffer lends its series in, so the next series'
            // state is most likely in the next slot: on its way from memory while this one is
            // scored.
            if let Some(at) = hint.get() {
                group.prefetch(at + 1);
            }
            // An equal label set in another allocation (restored from a state file, or the
            // source rebuilt it) is swapped for the source's, so that the next ticks compare
            // pointers rather than every pair, and the two share one copy of the labels.
            match group.get_adopting(labels, hint) {
                Some(entry) => {
                    let first = entry.first_report();
                    observe_new(entry, samples, |s| emit(labels, s, first, rec, report))
                        .count_into(report);
                }
                None if samples.is_empty() || is_ended => {}
                None => new.push(Series {
                    labels: labels.clone(),
                    samples: samples.to_vec(),
                }),
            }
        });
        if let Err(e) = visited {
            report.errors.push(self.error(i, Request::Score, &e));
            return;
        }
        let group = self.store.group_mut(state.group);
        for labels in &ended {
            if group.remove(labels).is_some() {
                report.ended += 1;
            }
        }
        // Series absent from the answer: overdue ones report missing data, and those unseen
        // for the retention expire. One pass: the entries of 100,000 series are tens of MiB,
        // and reading them twice a tick was a noticeable part of the push path's step.
        let horizon = now.add_millis(-self.plan.retention_ms);
        let mut expired = 0;
        let tracked = group.len();
        let mut overdue: Vec<(Labels, Scored)> = Vec::new();
        group.retain(|labels, entry| {
            // `tick` only reads the detector: the verdict is given below, unless the whole
            // query went quiet.
            if entry.last_seen < from
                && let Some(s) = entry.detector.tick(now)
            {
                overdue.push((labels.clone(), s));
            }
            let keep = entry.last_seen >= horizon;
            expired += usize::from(!keep);
            keep
        });
        report.expired += expired;
        if is_source_gap(overdue.len(), tracked) {
            report.source_gaps.push(Arc::clone(&query));
        } else {
            for (labels, s) in overdue {
                if let Some(entry) = group.get_mut(&labels) {
                    entry.latest = Some(s);
                    report.missing += 1;
                    let first = entry.first_report();
                    emit(&labels, s, first, rec, report);
                }
            }
        }
        self.jobs[i].scored_until = Some(now);
        if !new.is_empty() {
            self.warm_up(i, from, new, source, rec, report);
        }
    }

    /// Fits new series on their history, replays it into them, then scores their new samples.
    fn warm_up<S: HistorySource + ?Sized>(
        &mut self,
        i: usize,
        from: Timestamp,
        new: Vec<Series>,
        source: &mut S,
        rec: &mut Recorder<'_>,
        report: &mut StepReport,
    ) {
        let job = &self.plan.jobs[i];
        let q = RangeQuery {
            query: &job.query,
            expr: &job.expr,
            start: from.add_millis(-job.cadence.fit_window_ms),
            end: from,
            step_ms: job.step_ms,
            request: Request::WarmUp,
        };
        let history = match source.query_range(&q) {
            // Not tracked yet: the next score tick finds them new again and retries.
            Err(e) => return report.errors.push(self.error(i, Request::WarmUp, &e)),
            Ok(h) => h,
        };
        let mut history: HashMap<Labels, Vec<Sample>> =
            history.into_iter().map(|s| (s.labels, s.samples)).collect();
        let config = job.detector;
        let group = self.store.group_mut(self.jobs[i].group);
        let (model, query) = (group.model_arc(), group.query_arc());
        for series in new {
            let first = series.samples.first().map_or(from, |s| s.t);
            let mut past = history.remove(&series.labels).unwrap_or_default();
            past.retain(|s| s.t < first);
            let mut detector = match config.fit(&past) {
                Ok(d) => {
                    report.fitted += 1;
                    d
                }
                Err(_) => {
                    if !past.is_empty() {
                        report.fit_failures += 1;
                    }
                    Detector::new(config)
                }
            };
            for s in &past[past.len().saturating_sub(WARM_UP_SAMPLES)..] {
                detector.observe(*s);
            }
            let mut entry = Entry::new(detector, first);
            entry.last_scored = past.last().map(|s| s.t);
            entry.reported = true;
            observe_new(&mut entry, &series.samples, |scored| {
                rec.push(report, || StepScore {
                    model: model.clone(),
                    query: query.clone(),
                    labels: series.labels.clone(),
                    scored,
                    first: true,
                });
            })
            .count_into(report);
            group.insert(series.labels, entry);
            report.created += 1;
        }
    }

    /// Refits every tracked series of job `i`; `false` if the source failed.
    fn fit<S: HistorySource + ?Sized>(
        &mut self,
        i: usize,
        now: Timestamp,
        source: &mut S,
        report: &mut StepReport,
    ) -> bool {
        let job = &self.plan.jobs[i];
        let q = RangeQuery {
            query: &job.query,
            expr: &job.expr,
            start: now.add_millis(-job.cadence.fit_window_ms),
            end: now,
            step_ms: job.step_ms,
            request: Request::Fit,
        };
        let history = match source.query_range(&q) {
            Ok(h) => h,
            Err(e) => {
                report.errors.push(self.error(i, Request::Fit, &e));
                return false;
            }
        };
        let group = self.store.group_mut(self.jobs[i].group);
        for series in history {
            let Some(entry) = group.get_mut(&series.labels) else {
                continue; // new: fitted when its score tick picks it up
            };
            // Only what the detector has scored: a fit must not see the future.
            let upto = entry
                .last_scored
                .map_or(0, |t| series.samples.partition_point(|s| s.t <= t));
            match entry.detector.refit(&series.samples[..upto]) {
                Ok(()) => report.fitted += 1,
                Err(_) => report.fit_failures += 1,
            }
        }
        true
    }
}

/// Fewest series a query needs before its silence can be told from theirs.
const SOURCE_GAP_MIN_SERIES: usize = 10;

/// Whether `overdue` of a query's `tracked` series going quiet in the same tick is the
/// source's gap rather than each series' missing data: nine in ten of at least
/// [`SOURCE_GAP_MIN_SERIES`]. A Prometheus that stops remote-writing for the missing-data delay
/// (five steps), or a pipeline that stalls that long, silences every series at once; reported
/// one by one, that was one missing-data anomaly per series (90,000 in one tick of the
/// 100,000-series loopback bench) and an incident as wide as the cluster, where the problem
/// is one pipe. The source's own health (`portent_source_errors_total`,
/// `portent_samples_ingested_total`, `portent_source_gaps_total`) says it instead. A series
/// that goes quiet while the rest of its query keeps coming is still missing data.
fn is_source_gap(overdue: usize, tracked: usize) -> bool {
    tracked >= SOURCE_GAP_MIN_SERIES && overdue * 10 >= tracked * 9
}

/// What [`observe_new`] did.
struct Observed {
    samples: usize,
}

impl Observed {
    fn count_into(self, report: &mut StepReport) {
        report.samples_scored += self.samples;
        report.series_scored += usize::from(self.samples > 0);
    }
}

/// Scores (then learns) the samples newer than the last one `entry` scored, in order, and
/// keeps the highest-scoring of them (the later on ties) as the verdict on show.
fn observe_new(entry: &mut Entry, samples: &[Sample], mut emit: impl FnMut(Scored)) -> Observed {
    let start = entry
        .last_scored
        .map_or(0, |t| samples.partition_point(|s| s.t <= t));
    let fresh = &samples[start..];
    for (k, s) in fresh.iter().enumerate() {
        let scored = entry.detector.observe(*s);
        // The exposition shows the tick's most anomalous verdict, not its last: a catch-up
        // tick scores many samples, and an onset's score must not be overwritten by the
        // calmer samples after it before Prometheus has scraped it once.
        let shown = entry.latest.filter(|l| k > 0 && l.score > scored.score);
        entry.latest = Some(shown.unwrap_or(scored));
        emit(scored);
    }
    if let Some(last) = fresh.last() {
        entry.last_scored = Some(last.t);
        entry.last_seen = entry.last_seen.max(last.t);
    }
    Observed {
        samples: fresh.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_align_to_the_epoch() {
        assert_eq!(
            next_tick(Timestamp::from_millis(0), 60),
            Timestamp::from_millis(60)
        );
        assert_eq!(
            next_tick(Timestamp::from_millis(59), 60),
            Timestamp::from_millis(60)
        );
        assert_eq!(
            next_tick(Timestamp::from_millis(60), 60),
            Timestamp::from_millis(120)
        );
        assert_eq!(
            next_tick(Timestamp::from_millis(-1), 60),
            Timestamp::from_millis(0)
        );
    }

    #[test]
    fn plan_from_a_config_has_a_job_per_model_schedule_and_query() {
        let yaml = "source: {pull: {url: http://localhost:9090}}\n\
                    queries: {up: {expr: up}, load: {expr: node_load1, step: 30s}}\n\
                    models: {spiky: {type: auto, direction: above, queries: [load]}}\n\
                    schedules: {fast: {fit_every: 1h, fit_window: 2d, score_every: 1m}}\n\
                    storage: {series_retention: 3h}\n";
        let config =
            portent_config::Config::from_yaml_with_env(yaml, std::path::Path::new("."), |_| None)
                .unwrap();
        let plan = Plan::from_config(&config).unwrap();
        assert_eq!(plan.retention_ms, 3 * 3_600_000);
        assert_eq!(plan.jobs.len(), 1);
        let j = &plan.jobs[0];
        assert_eq!((j.model.as_str(), j.query.as_str()), ("spiky", "load"));
        assert_eq!((j.expr.as_str(), j.step_ms), ("node_load1", 30_000));
        assert_eq!(j.detector.direction, portent_core::Direction::Above);
        assert_eq!(
            j.cadence,
            Cadence {
                fit_every_ms: 3_600_000,
                fit_window_ms: 2 * 86_400_000,
                score_every_ms: 60_000,
            }
        );
    }

    #[test]
    fn a_restored_key_gives_way_to_the_sources_equal_labels() {
        const MIN: i64 = 60_000;
        let plan = Plan {
            jobs: vec![Job {
                model: "m".into(),
                query: "q".into(),
                expr: "up".into(),
                step_ms: MIN,
                detector: DetectorConfig::default(),
                cadence: Cadence {
                    fit_every_ms: 7 * 1440 * MIN,
                    fit_window_ms: 1440 * MIN,
                    score_every_ms: MIN,
                },
            }],
            joint: Vec::new(),
            retention_ms: 1440 * MIN,
        };
        // The same pairs in two allocations: as a state file restores them, as the source
        // sends them.
        let restored = Labels::new([("__name__", "up"), ("pod", "a")]).unwrap();
        let sent = Labels::new([("__name__", "up"), ("pod", "a")]).unwrap();
        assert!(!Labels::ptr_eq(&restored, &sent));
        let mut store = Store::new();
        let g = store.group_id("m", "q");
        let mut e = Entry::new(
            Detector::new(DetectorConfig::default()),
            Timestamp::from_millis(0),
        );
        e.last_scored = Some(Timestamp::from_millis(0));
        store.group_mut(g).insert(restored.clone(), e);
        let (mut scheduler, _) = Scheduler::with_store(plan, store).unwrap();
        let mut source = crate::MemorySource::new();
        let samples = (1..=3)
            .map(|i| Sample::new(Timestamp::from_millis(i * MIN), 1.0))
            .collect();
        source.insert(
            "q",
            Series {
                labels: sent.clone(),
                samples,
            },
        );
        let report = scheduler.step(Timestamp::from_millis(3 * MIN), &mut source);
        assert_eq!((report.samples_scored, report.created), (3, 0));
        let group = scheduler.store().group(g);
        assert_eq!(group.len(), 1);
        let (key, entry) = group.get_key_value(&restored).unwrap();
        assert!(
            Labels::ptr_eq(key, &sent),
            "the key is now the source's allocation"
        );
        assert_eq!(entry.last_scored, Some(Timestamp::from_millis(3 * MIN)));
    }

    #[test]
    fn plan_refuses_nonsense() {
        let job = Job {
            model: "m".into(),
            query: "q".into(),
            expr: "up".into(),
            step_ms: 60_000,
            detector: DetectorConfig::default(),
            cadence: Cadence {
                fit_every_ms: 3_600_000,
                fit_window_ms: 86_400_000,
                score_every_ms: 60_000,
            },
        };
        let mut plan = Plan {
            jobs: vec![job],
            joint: Vec::new(),
            retention_ms: 3_600_000,
        };
        assert!(plan.validate().is_ok());
        plan.jobs[0].step_ms = 0;
        assert_eq!(
            plan.validate().unwrap_err().to_string(),
            "queries.q.step: must be positive"
        );
        plan.jobs[0].step_ms = 1;
        plan.jobs[0].detector.memory = 1.0;
        assert!(
            plan.validate()
                .unwrap_err()
                .to_string()
                .starts_with("models.m: fit: memory")
        );
    }
}
