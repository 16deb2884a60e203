//! Where the scheduler reads samples from: the [`HistorySource`] trait, and [`MemorySource`],
//! series held in memory (a replay of files, or a test's fake).
//!
//! The store keeps no raw history per series (that would cost far more than the 4 KiB a series
//! may use), so every fit reads its window from the source: Prometheus or VictoriaMetrics'
//! `query_range` in the daemon and in backtests, files in an offline replay.
//!
//! The trait is synchronous so that the step stays a plain function of `(now, source)`. The
//! daemon, whose client is async, runs the step on a blocking thread
//! (`tokio::task::spawn_blocking`) and implements this trait with
//! `Handle::block_on(client.query_range(…))`.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;

use portent_core::{Labels, Sample, Series, Timestamp};

use crate::Request;

/// One `query_range` request: a query's samples over `[start, end]`, both ends included.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RangeQuery<'a> {
    /// The query's alias in the config.
    pub query: &'a str,
    /// Its PromQL expression.
    pub expr: &'a str,
    /// The first time wanted.
    pub start: Timestamp,
    /// The last time wanted.
    pub end: Timestamp,
    /// The resolution, in ms.
    pub step_ms: i64,
    /// What the samples are for: scoring, or history to warm up or refit on.
    pub request: Request,
}

/// A source of samples for the scheduler.
pub trait HistorySource {
    /// Why a request failed (unreachable server, bad answer…). Only its message is kept.
    type Error: fmt::Display;

    /// Every series the query gives over `[q.start, q.end]`, samples sorted by time.
    fn query_range(&mut self, q: &RangeQuery<'_>) -> Result<Vec<Series>, Self::Error>;

    /// Calls `visit` with each series [`Self::query_range`] would give, in any order. A source
    /// that holds its series in memory (the push buffer) lends them instead of copying each
    /// into a new [`Series`]: at 100,000 series a score tick's copies, and the reference count
    /// of each label set touched twice, were a third of the scheduler's time. An error comes
    /// before any series is visited.
    fn visit_range(
        &mut self,
        q: &RangeQuery<'_>,
        visit: &mut dyn FnMut(&Labels, &[Sample], &Hint),
    ) -> Result<(), Self::Error> {
        for s in self.query_range(q)? {
            visit(&s.labels, &s.samples, &Hint::default());
        }
        Ok(())
    }
}

impl<S: HistorySource + ?Sized> HistorySource for &mut S {
    type Error = S::Error;
    fn query_range(&mut self, q: &RangeQuery<'_>) -> Result<Vec<Series>, Self::Error> {
        (**self).query_range(q)
    }

    fn visit_range(
        &mut self,
        q: &RangeQuery<'_>,
        visit: &mut dyn FnMut(&Labels, &[Sample], &Hint),
    ) -> Result<(), Self::Error> {
        (**self).visit_range(q, visit)
    }
}

/// Where the scheduler last found a series' state, kept by a source that keeps its series (the
/// push buffer) and handed back with the series on each visit: with it the scheduler finds the
/// state without a hash lookup, whose cache misses were a third of a score tick at a million
/// series. Any value is safe: a stale hint costs the lookup it would have saved.
#[derive(Clone, Debug)]
pub struct Hint(Cell<u32>);

impl Hint {
    /// No position: four bytes rather than an `Option`'s eight, as the push buffer keeps one
    /// per series.
    const NONE: u32 = u32::MAX;

    /// The position the hint holds, if any.
    pub fn get(&self) -> Option<usize> {
        let at = self.0.get();
        (at != Self::NONE).then_some(at as usize)
    }

    /// Remembers position `at`.
    pub fn set(&self, at: usize) {
        self.0.set(u32::try_from(at).unwrap_or(Self::NONE));
    }
}

impl Default for Hint {
    fn default() -> Self {
        Self(Cell::new(Self::NONE))
    }
}

/// Series held in memory by query alias, answering `query_range` by time range: a replay of
/// files, or a test's stand-in for Prometheus. The expression is ignored.
#[derive(Clone, Debug, Default)]
pub struct MemorySource {
    queries: BTreeMap<String, Vec<Series>>,
}

/// A query alias [`MemorySource`] holds nothing for.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("memory source: no series for query {0:?}")]
pub struct UnknownQuery(pub String);

impl MemorySource {
    /// An empty source.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `series` to the answers of query `query`; its samples must be sorted by time.
    pub fn insert(&mut self, query: &str, series: Series) {
        self.queries
            .entry(query.to_owned())
            .or_default()
            .push(series);
    }

    /// Adds every series of `series` to the answers of query `query`, which answers (with
    /// no series) even when there are none: a query that matched nothing is not unknown.
    pub fn insert_all(&mut self, query: &str, series: impl IntoIterator<Item = Series>) {
        self.queries
            .entry(query.to_owned())
            .or_default()
            .extend(series);
    }
}

impl HistorySource for MemorySource {
    type Error = UnknownQuery;

    fn query_range(&mut self, q: &RangeQuery<'_>) -> Result<Vec<Series>, UnknownQuery> {
        let all = self
            .queries
            .get(q.query)
            .ok_or_else(|| UnknownQuery(q.query.to_owned()))?;
        Ok(all
            .iter()
            .filter_map(|s| {
                let from = s.samples.partition_point(|x| x.t < q.start);
                let to = s.samples.partition_point(|x| x.t <= q.end);
                (from < to).then(|| Series {
                    labels: s.labels.clone(),
                    samples: s.samples[from..to].to_vec(),
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portent_core::{Labels, Sample};

    #[test]
    fn memory_source_answers_by_range_inclusive() {
        let mut m = MemorySource::new();
        let labels = Labels::new([("a", "1")]).unwrap();
        let samples = (0..10)
            .map(|i| Sample::new(Timestamp::from_secs(i * 60), i as f64))
            .collect();
        m.insert("q", Series { labels, samples });
        let q = RangeQuery {
            query: "q",
            expr: "up",
            start: Timestamp::from_secs(120),
            end: Timestamp::from_secs(300),
            step_ms: 60_000,
            request: crate::Request::Score,
        };
        let got = m.query_range(&q).unwrap();
        assert_eq!(got.len(), 1);
        let vs: Vec<f64> = got[0].samples.iter().map(|s| s.v).collect();
        assert_eq!(vs, [2.0, 3.0, 4.0, 5.0]);
        let empty = RangeQuery {
            start: Timestamp::from_secs(10_000),
            end: Timestamp::from_secs(20_000),
            ..q
        };
        assert!(m.query_range(&empty).unwrap().is_empty());
        let unknown = RangeQuery { query: "x", ..q };
        assert_eq!(
            m.query_range(&unknown).unwrap_err().to_string(),
            "memory source: no series for query \"x\""
        );
    }
}
