//! Multivariate jobs: the rows that several queries form per entity, scored by a model pooled
//! over the entities that share it.
//!
//! A [`JointJob`] is one `isolation_forest` or `autoencoder` model of the config. At each score
//! tick it reads every one of its queries (its *features*, in order) since its last tick, and
//! joins their series on the model's `join_on` labels: the series of each query that agree on
//! those labels belong to one *entity* (a pod), and their samples in one step-long bucket form
//! the entity's row for that step. Rows are scored once their bucket has closed (the bucket of
//! `now` is still filling), so a feature that arrives a little after the others still makes it
//! into the row; a row that misses a feature is not scored (no evidence either way).
//!
//! Entities that agree on the `pool_by` labels share one model, fitted on all their rows: the
//! replicas of one workload, so that a pod that a rollout created is scored by its replicas'
//! model with no model of its own to fit, once it has warmed up: until its series are
//! [`WARM_UP_MS`] old, a new pod is judged by its univariate verdicts alone. A pool without a
//! model is fitted on its history when first seen, every pool is refitted at each fit tick, and
//! a fit reads only rows up to the last closed bucket, so it never sees the future. The pools
//! live in the [`Store`], so a restart resumes with them.
//!
//! The verdict on a row is [`combine`] of the model's row score with the entity's univariate
//! scores of the same features (from the store, when an `auto` model scores those queries):
//! one score per entity that rises with either kind of evidence. Its reason is
//! [`Reason::Combination`] when the row score is the larger part, else that of the highest
//! univariate verdict; its value is the model's raw score, and it has no expected band.

use std::collections::{BTreeMap, HashMap};

use portent_config::JointMethod;
use portent_core::{FitError, Labels, Reason, Score, Scored, Timestamp, is_stale_marker};
use portent_models::multivariate::{
    Autoencoder, AutoencoderConfig, FeatureSet, IsolationForest, IsolationForestConfig, RowScore,
    ScoreRows, combine,
};
use serde::{Deserialize, Serialize};

use crate::schedule::{Cadence, Recorder, Request, SourceError, StepReport, StepScore};
use crate::source::{HistorySource, RangeQuery};
use crate::store::{Group, Store};

/// How long an entity's series must have been observed before the pool's model scores its
/// rows. A pod in its first minutes warms up (its memory climbs from a fraction of its
/// replicas', its caches fill), and a model fitted on grown replicas finds each of its rows
/// unusual: on the simulated cluster, whose deployments roll out most mornings, a rollout's new
/// pods were the largest single source of false incidents (`eval sim`, seed 42: 9.2 false
/// incidents a day, 7.8 without them; the Isolation Forest's false alarms per entity per day
/// 0.20 -> 0.09; 10, 20, 30 and 60 minutes measured the same, every scenario caught as fast).
/// Until then its univariate verdicts, which trust a young series in proportion to what it has
/// seen, speak for it. The age is that of the entity's series in the univariate detectors
/// (samples observed, a restart included); an entity no univariate model scores is not held.
pub const WARM_UP_MS: i64 = 15 * 60_000;

/// When the entity with `sources` (its series of each feature) began, in ms, as far as its
/// univariate detectors in `groups` know: a series whose detector has observed `n` samples up
/// to `now` began about `n` steps before. `None` when no univariate detector scores it. Its rows
/// before `began + WARM_UP_MS` are warming up.
fn began_at(
    sources: &[Option<Labels>],
    groups: &[Group],
    step_ms: i64,
    now: Timestamp,
) -> Option<f64> {
    let mut began: Option<f64> = None;
    for labels in sources.iter().flatten() {
        for e in groups.iter().filter_map(|g| g.get(labels)) {
            let d = &e.detector;
            let age = d.seen() as f64 * d.expected_step_ms().unwrap_or(step_ms as f64);
            let b = now.millis() as f64 - age;
            began = Some(began.map_or(b, |o| o.min(b)));
        }
    }
    began
}

/// One query of a joint job: a feature of its rows.
#[derive(Clone, Debug, PartialEq)]
pub struct Feature {
    /// The query alias (the feature's name).
    pub query: String,
    /// The query's PromQL expression.
    pub expr: String,
}

/// One multivariate model scoring the rows of its queries on one schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct JointJob {
    /// The model alias: the `model` and the `query` label of its verdicts.
    pub model: String,
    /// Isolation Forest or autoencoder.
    pub method: JointMethod,
    /// The features, in row order; at least two.
    pub features: Vec<Feature>,
    /// The queries' common step, in ms: one row per entity per step.
    pub step_ms: i64,
    /// The labels that name an entity.
    pub join_on: Vec<String>,
    /// The labels that name an entity's pool (its model).
    pub pool_by: Vec<String>,
    /// The schedule.
    pub cadence: Cadence,
}

/// A fitted pool model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Fitted {
    Forest(IsolationForest),
    Autoencoder(Autoencoder),
}

impl Fitted {
    fn fit(method: JointMethod, schema: FeatureSet, rows: &[Vec<f64>]) -> Result<Self, FitError> {
        Ok(match method {
            JointMethod::IsolationForest => {
                Fitted::Forest(IsolationForestConfig::default().fit(schema, rows)?)
            }
            JointMethod::Autoencoder => {
                Fitted::Autoencoder(AutoencoderConfig::default().fit(schema, rows)?)
            }
        })
    }

    fn score(&self, row: &[f64]) -> Option<RowScore> {
        match self {
            Fitted::Forest(m) => m.score_row(row).ok(),
            Fitted::Autoencoder(m) => m.score_row(row).ok(),
        }
    }
}

/// A pool: its model, if one could be fitted. Kept in the [`Store`] (and so in the state
/// file), so that a restart scores at once instead of refitting every pool.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Pool {
    model: Option<Fitted>,
    /// When a fit last failed (too few complete rows): retried after [`RETRY_FIT_MS`].
    failed_at: Option<Timestamp>,
}

/// A failed pool fit is retried this long after, at a score tick, rather than at the next fit
/// tick (a day by default): a new workload in push mode has no history to fit on at first.
const RETRY_FIT_MS: i64 = 3_600_000;

/// One entity's state.
#[derive(Clone, Debug)]
struct Entity {
    pool: Labels,
    /// The last bucket scored (or skipped as incomplete).
    last_bucket: Option<i64>,
    last_seen: Timestamp,
    latest: Option<Scored>,
    /// Each feature's share of the latest verdict, in feature order.
    contributions: Vec<f64>,
    /// The entity's series of each feature, as last read: where its univariate verdicts are.
    sources: Vec<Option<Labels>>,
    /// The previous row's bucket and model score: see [`sustained`].
    previous: Option<(i64, Score)>,
}

impl Entity {
    /// Its latest verdict as `job`'s, under `labels` (its key), if it has one.
    fn latest<'a>(&'a self, job: &'a JointJob, labels: &'a Labels) -> Option<JointLatest<'a>> {
        Some(JointLatest {
            model: &job.model,
            labels,
            scored: self.latest.as_ref()?,
            features: &job.features,
            contributions: &self.contributions,
        })
    }
}

/// One joint job's progress and state.
#[derive(Clone, Debug, Default)]
pub(crate) struct JointRun {
    pub(crate) next_score: Option<Timestamp>,
    pub(crate) next_fit: Option<Timestamp>,
    scored_until: Option<Timestamp>,
    entities: HashMap<Labels, Entity>,
}

/// One entity's latest multivariate verdict, with each feature's share of it.
#[derive(Copy, Clone, Debug)]
pub struct JointLatest<'a> {
    /// The model alias (its verdicts' `model` and `query` label).
    pub model: &'a str,
    /// The entity: its `join_on` labels.
    pub labels: &'a Labels,
    /// The verdict.
    pub scored: &'a Scored,
    /// The features (the model's queries), in row order.
    pub features: &'a [Feature],
    /// Each feature's share of the score, in row order, summing to 1 (all 0 when nothing
    /// stood out).
    pub contributions: &'a [f64],
}

/// The rows read for one tick, by entity.
#[derive(Default)]
struct Rows {
    entities: HashMap<Labels, EntityRows>,
}

/// One entity's rows as read.
struct EntityRows {
    pool: Labels,
    /// Its series of each feature, if the answer had one.
    sources: Vec<Option<Labels>>,
    /// Per bucket, the row (NaN where a feature had no sample).
    buckets: BTreeMap<i64, Vec<f64>>,
    /// Whether each feature's series ended in this answer (a trailing stale marker).
    ended: Vec<bool>,
}

/// What a joint job's score tick reads of the scheduler besides its own state.
pub(crate) struct Context<'a, 's> {
    /// The univariate state, for the verdicts combined with the rows', and the pools.
    pub(crate) store: &'a mut Store,
    /// Entities unseen this long are forgotten.
    pub(crate) retention_ms: i64,
    /// Where the verdicts go.
    pub(crate) rec: &'a mut Recorder<'s>,
}

/// The labels `names` of `labels`, if it has every one.
fn project(labels: &Labels, names: &[String]) -> Option<Labels> {
    let pairs: Option<Vec<(&str, &str)>> = names
        .iter()
        .map(|n| labels.get(n).map(|v| (n.as_str(), v)))
        .collect();
    Labels::new(pairs?).ok()
}

impl JointJob {
    fn schema(&self) -> Result<FeatureSet, FitError> {
        FeatureSet::new(self.features.iter().map(|f| f.query.clone()))
            .map_err(|e| FitError::Config(e.to_string()))
    }

    fn error<E: std::fmt::Display>(&self, feature: usize, request: Request, e: &E) -> SourceError {
        SourceError {
            model: self.model.clone(),
            query: self.features[feature].query.clone(),
            request,
            message: e.to_string(),
        }
    }

    /// Every feature over `[start, end]`, joined into rows; `Err` with the first failure.
    fn read<S: HistorySource + ?Sized>(
        &self,
        source: &mut S,
        start: Timestamp,
        end: Timestamp,
        request: Request,
    ) -> Result<Rows, SourceError> {
        let width = self.features.len();
        let mut rows = Rows::default();
        for (k, f) in self.features.iter().enumerate() {
            let q = RangeQuery {
                query: &f.query,
                expr: &f.expr,
                start,
                end,
                step_ms: self.step_ms,
                request,
            };
            let answer = source
                .query_range(&q)
                .map_err(|e| self.error(k, request, &e))?;
            for series in answer {
                let Some(entity) = project(&series.labels, &self.join_on) else {
                    continue; // not an entity of this model: the query gives other series too
                };
                let read = rows
                    .entities
                    .entry(entity)
                    .or_insert_with_key(|e| EntityRows {
                        // A series without every pool label is pooled alone rather than with
                        // every other such series.
                        pool: project(&series.labels, &self.pool_by).unwrap_or_else(|| e.clone()),
                        sources: vec![None; width],
                        buckets: BTreeMap::new(),
                        ended: vec![false; width],
                    });
                read.sources[k] = Some(series.labels.clone());
                read.ended[k] = series.samples.last().is_some_and(|s| is_stale_marker(s.v));
                for s in &series.samples {
                    if is_stale_marker(s.v) {
                        continue;
                    }
                    let row = read
                        .buckets
                        .entry(s.t.millis().div_euclid(self.step_ms))
                        .or_insert_with(|| vec![f64::NAN; width]);
                    // The bucket's latest sample stands for it.
                    row[k] = if s.v.is_finite() { s.v } else { f64::NAN };
                }
            }
        }
        Ok(rows)
    }
}

impl JointRun {
    /// Every entity's latest verdict.
    pub(crate) fn latest<'a>(&'a self, job: &'a JointJob) -> impl Iterator<Item = JointLatest<'a>> {
        self.entities
            .iter()
            .filter_map(move |(labels, e)| e.latest(job, labels))
    }

    /// The latest verdict of the entity `labels`, if it has one.
    pub(crate) fn latest_of<'a>(
        &'a self,
        job: &'a JointJob,
        labels: &Labels,
    ) -> Option<JointLatest<'a>> {
        let (labels, e) = self.entities.get_key_value(labels)?;
        e.latest(job, labels)
    }

    /// How many entities are tracked.
    pub(crate) fn len(&self) -> usize {
        self.entities.len()
    }

    /// Reads the rows since the last tick, fits pools that have no model yet, and scores every
    /// closed row not scored before.
    pub(crate) fn score<S: HistorySource + ?Sized>(
        &mut self,
        job: &JointJob,
        now: Timestamp,
        source: &mut S,
        cx: &mut Context<'_, '_>,
        report: &mut StepReport,
    ) {
        let step = job.step_ms;
        // One step back, so that the bucket that was still filling at the last tick is read
        // again, whole.
        let from = self
            .scored_until
            .unwrap_or(now.add_millis(-job.cadence.score_every_ms))
            .add_millis(-step)
            .max(now.add_millis(-job.cadence.fit_window_ms));
        let rows = match job.read(source, from, now, Request::Score) {
            Ok(r) => r,
            Err(e) => return report.errors.push(e),
        };
        let open = now.millis().div_euclid(step);
        // Pools seen for the first time (or whose fit failed a while ago) are fitted on the
        // history before this tick's rows.
        let unfitted: Vec<Labels> = {
            let mut v: Vec<Labels> = rows
                .entities
                .values()
                .map(|r| &r.pool)
                .filter(
                    |p| match cx.store.pools(&job.model).and_then(|m| m.get(*p)) {
                        None => true,
                        Some(pool) => {
                            pool.model.is_none()
                                && pool
                                    .failed_at
                                    .is_none_or(|t| now.millis() - t.millis() >= RETRY_FIT_MS)
                        }
                    },
                )
                .cloned()
                .collect();
            v.sort();
            v.dedup();
            v
        };
        if !unfitted.is_empty() {
            let upto = from.millis().div_euclid(step);
            fit_pools(job, cx.store, Some(&unfitted), now, upto, source, report);
        }
        let model: std::sync::Arc<str> = job.model.as_str().into();
        let (groups, pools) = cx.store.split_pools(&job.model);
        for (labels, read) in rows.entities {
            let EntityRows {
                pool,
                sources,
                buckets,
                ended,
            } = read;
            let entity = self
                .entities
                .entry(labels.clone())
                .or_insert_with(|| Entity {
                    pool: pool.clone(),
                    last_bucket: None,
                    last_seen: now,
                    latest: None,
                    contributions: vec![0.0; job.features.len()],
                    sources: vec![None; job.features.len()],
                    previous: None,
                });
            entity.pool = pool;
            for (k, s) in sources.into_iter().enumerate() {
                if s.is_some() {
                    entity.sources[k] = s;
                }
            }
            // Once per entity and tick: the detectors it is read from do not change in between.
            let began = began_at(&entity.sources, groups, step, now);
            let mut shown: Option<(Scored, Vec<f64>)> = None;
            for (&bucket, row) in buckets.range(..open) {
                if entity.last_bucket.is_some_and(|b| bucket <= b) {
                    continue;
                }
                entity.last_bucket = Some(bucket);
                let t = Timestamp::from_millis(bucket.saturating_mul(step));
                entity.last_seen = entity.last_seen.max(t);
                if row.iter().any(|v| !v.is_finite()) {
                    continue; // a feature missing: no evidence either way
                }
                let Some(fitted) = pools.get(&entity.pool).and_then(|p| p.model.as_ref()) else {
                    continue; // no model for the pool yet
                };
                let warming_up = began.is_some_and(|b| (t.millis() as f64) - b < WARM_UP_MS as f64);
                let row_score = if warming_up {
                    RowScore::missing(row.len())
                } else {
                    let Some(mut row_score) = fitted.score(row) else {
                        continue;
                    };
                    let this = row_score.score;
                    row_score.score = sustained(this, entity.previous, bucket);
                    entity.previous = Some((bucket, this));
                    row_score
                };
                let (verdict, contributions) = verdict(job, &row_score, t, &entity.sources, groups);
                report.joint_rows_scored += 1;
                cx.rec.push(report, || StepScore {
                    model: model.clone(),
                    query: model.clone(),
                    labels: labels.clone(),
                    scored: verdict,
                    // Entities are not followed from tick to tick that way: always news.
                    first: true,
                });
                // As for series, the tick's most anomalous verdict is the one on show.
                if shown.as_ref().is_none_or(|(s, _)| verdict.score >= s.score) {
                    shown = Some((verdict, contributions));
                }
            }
            if let Some((s, c)) = shown {
                entity.latest = Some(s);
                entity.contributions = c;
            }
            // Every feature's series ended (a pod deleted by a rollout): forgotten now, as a
            // series is, rather than shown until the retention.
            if ended.iter().all(|e| *e) {
                self.entities.remove(&labels);
                report.ended += 1;
            }
        }
        let horizon = now.add_millis(-cx.retention_ms);
        self.entities.retain(|_, e| e.last_seen >= horizon);
        let live: std::collections::HashSet<&Labels> =
            self.entities.values().map(|e| &e.pool).collect();
        pools.retain(|p, _| live.contains(p));
        self.scored_until = Some(now);
    }
}

/// Refits every pool of `job` in `store` (`only`: just those) on the rows of
/// `[now - fit_window, now]` in buckets before `upto`; `false` if the source failed.
pub(crate) fn fit_pools<S: HistorySource + ?Sized>(
    job: &JointJob,
    store: &mut Store,
    only: Option<&[Labels]>,
    now: Timestamp,
    upto: i64,
    source: &mut S,
    report: &mut StepReport,
) -> bool {
    // The plan checks the schema; without one there is nothing to fit with.
    let Ok(schema) = job.schema() else {
        return true;
    };
    let start = now.add_millis(-job.cadence.fit_window_ms);
    let rows = match job.read(source, start, now, Request::Fit) {
        Ok(r) => r,
        Err(e) => {
            report.errors.push(e);
            return false;
        }
    };
    // Time-major rows per pool: the models keep the most recent `window` of them.
    let mut by_pool: HashMap<Labels, Vec<(i64, Vec<f64>)>> = HashMap::new();
    for read in rows.entities.into_values() {
        if only.is_some_and(|o| !o.contains(&read.pool)) {
            continue;
        }
        let out = by_pool.entry(read.pool).or_default();
        for (b, row) in read.buckets.range(..upto) {
            if row.iter().all(|v| v.is_finite()) {
                out.push((*b, row.clone()));
            }
        }
    }
    for pool in only.into_iter().flatten() {
        by_pool.entry(pool.clone()).or_default();
    }
    for (pool, mut rows) in by_pool {
        rows.sort_by_key(|(b, _)| *b);
        let rows: Vec<Vec<f64>> = rows.into_iter().map(|(_, r)| r).collect();
        let entry = store.pools_mut(&job.model).entry(pool).or_default();
        match Fitted::fit(job.method, schema.clone(), &rows) {
            Ok(m) => {
                entry.model = Some(m);
                entry.failed_at = None;
                report.fitted += 1;
            }
            Err(_) => {
                // A refit that fails keeps the previous model.
                entry.failed_at = Some(now);
                report.fit_failures += 1;
            }
        }
    }
    true
}

/// The model's evidence on the row of `bucket`: the lower of its score `this` and the previous
/// row's (0 when the previous step had no scored row). `eval sim` applies it as the daemon
/// does. A model's score has noise of its own (the forest's random splits, the network's fit),
/// and on held-out healthy rows it crosses the threshold on lone rows a few times a day per
/// entity (`tests/joint.rs` measured 14 in 4,112 rows); an unusual combination that matters (a
/// joint shift, a leak with its latency) holds for many steps, and a one-step excursion is the
/// univariate detectors' to call (a spike). The cost is one step of delay.
pub fn sustained(this: Score, previous: Option<(i64, Score)>, bucket: i64) -> Score {
    match previous {
        Some((b, s)) if b == bucket - 1 => {
            if s.get() < this.get() {
                s
            } else {
                this
            }
        }
        _ => Score::ZERO,
    }
}

/// The verdict on a scored row: combined with the entity's univariate verdicts on the same
/// series (the latest of each, if an `auto` model scores that series under any query and gave
/// it within a step of the row), and each feature's share.
fn verdict(
    job: &JointJob,
    row: &RowScore,
    t: Timestamp,
    sources: &[Option<Labels>],
    groups: &[Group],
) -> (Scored, Vec<f64>) {
    let recent = |s: &Scored| (s.t.millis() - t.millis()).abs() <= job.step_ms;
    let univariate: Vec<Option<Scored>> = job
        .features
        .iter()
        .zip(sources)
        .map(|(_, labels)| {
            let labels = labels.as_ref()?;
            // Whichever `auto` model scores this very series, under whatever query.
            groups
                .iter()
                .filter_map(|g| g.get(labels)?.latest)
                .filter(recent)
                .max_by(|a, b| a.score.get().total_cmp(&b.score.get()))
        })
        .collect();
    let scores: Vec<Score> = univariate
        .iter()
        .map(|u| u.map_or(Score::ZERO, |s| s.score))
        .collect();
    let Ok(entity) = combine(row, &scores) else {
        // Widths agree by construction; were they not, the row alone is the verdict.
        return (row_only(row, t), row.contributions.clone());
    };
    let reason = if entity.multivariate >= entity.univariate {
        Some(Reason::Combination)
    } else {
        univariate
            .iter()
            .flatten()
            .max_by(|a, b| a.score.get().total_cmp(&b.score.get()))
            .and_then(|s| s.reason)
    };
    let scored = Scored {
        score: entity.score,
        reason: reason.filter(|_| entity.score.get() > 0.0),
        ..row_only(row, t)
    };
    (scored, entity.contributions)
}

fn row_only(row: &RowScore, t: Timestamp) -> Scored {
    Scored {
        t,
        value: row.raw,
        score: row.score,
        yhat: f64::NAN,
        yhat_lower: f64::NAN,
        yhat_upper: f64::NAN,
        reason: Some(Reason::Combination).filter(|_| row.score.get() > 0.0),
    }
}
