//! The push buffer: samples Prometheus remote_writes to portent, kept per series so that the
//! scheduler can read them like any other [`HistorySource`].
//!
//! Pull mode asks Prometheus for history; in push mode nobody else keeps it, so the buffer
//! does, for as long as warm-ups and refits need it, and no longer:
//!
//! * **Which series.** A push query's expression is a plain selector
//!   (`http_requests_total{job="api", code=~"5.."}`); a pushed series is kept if at least one
//!   push query selects it, and belongs to every one that does. Series no query selects are
//!   dropped on arrival (counted as [`IngestStats::unmatched`]), so pushing a whole Prometheus
//!   costs only what the queries select.
//! * **Per series**, a ring of at most [`PushLimits::max_samples_per_series`] samples, at most
//!   one per query step (the smallest step of the queries selecting it; a sample less than
//!   90% of a step after the previous kept one is skipped, so 15 s scrapes read at a 1 m step
//!   keep one sample a minute). The oldest samples go first, up to eight at a time.
//! * **In total**, at most [`PushLimits::max_samples`] samples, shared evenly: a series
//!   holds at most its share (the total over the number of series) and, once there, makes
//!   room for each new sample by dropping its own oldest. When more series come, the others
//!   shrink to their new share as their next samples arrive. While the buffer is full (new
//!   series came faster than the others shrank), a series can no longer grow and new series
//!   are refused; both are counted as [`IngestStats::buffer_full`]. Series that stop arriving
//!   are dropped by [`PushBuffer::expire`].
//!
//! Memory: each ring keeps its newest 8 to 12 samples as they are (16 bytes each) and packs the
//! older ones (see `samples`): 1 to 4 bytes a sample for counters, whole-number gauges and
//! repeated values, about 8 for noisy floats, 17 at worst. A ring is given room for its share
//! of the bounds at once, and an eighth more. So the samples take about half of `16 ×
//! max_samples` bytes (256 MiB with the defaults) for noisy values, less for most others, plus
//! per series its label set and about 130 bytes of bookkeeping. With the defaults (4,320
//! samples per series: three days at a 1 m step), a noisy series full to its bound holds about
//! 35 KiB.
//!
//! Stale markers (Prometheus' special NaN, sent when a series disappears) are not kept as
//! samples but counted, and one newer than every sample of its series marks the series ended:
//! reads then end it with a stale marker, and the scheduler forgets it rather than report it
//! missing (a pod deleted by a rollout is not an anomaly). Ordinary NaN and infinities are kept for the detector to judge. A sample not newer
//! than the last one kept for its series (out of order, or a duplicate) is dropped and counted.
//! Nothing a sender pushes makes the buffer panic or grow past its bounds.

use std::hash::{BuildHasher, Hash, Hasher};

use hashbrown::{Equivalent, HashMap};
use portent_core::{
    Labels, LabelsHash, LabelsRef, STALE_NAN_BITS, Sample, Series, Timestamp, is_stale_marker,
};
use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{self, Expr};

use crate::source::{Hint, HistorySource, RangeQuery};

mod samples;
use samples::{Samples, Shape};

/// A plain PromQL vector selector, to match pushed series by their labels.
#[derive(Clone, Debug)]
pub struct Selector {
    name: Option<String>,
    matchers: Vec<Matcher>,
    or_matchers: Vec<Vec<Matcher>>,
}

/// An expression that is not a plain vector selector.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("push query {expr:?}: {reason}")]
pub struct SelectorError {
    /// The expression.
    pub expr: String,
    /// Why it is refused.
    pub reason: String,
}

impl Selector {
    /// Parses `expr`, which must be a vector selector without `offset` or `@`.
    pub fn parse(expr: &str) -> Result<Self, SelectorError> {
        let fail = |reason: &str| SelectorError {
            expr: expr.to_owned(),
            reason: reason.to_owned(),
        };
        match parser::parse(expr) {
            Ok(Expr::VectorSelector(vs)) if vs.offset.is_none() && vs.at.is_none() => Ok(Self {
                name: vs.name,
                matchers: vs.matchers.matchers,
                or_matchers: vs.matchers.or_matchers,
            }),
            Ok(_) => Err(fail("not a plain series selector")),
            Err(e) => Err(fail(&e)),
        }
    }

    /// Whether the series `labels` is selected. A label the series lacks has the value `""`,
    /// as in Prometheus (`{code!="500"}` selects series without `code`).
    pub fn matches(&self, labels: &Labels) -> bool {
        let all = |ms: &[Matcher]| {
            ms.iter()
                .all(|m| m.is_match(labels.get(&m.name).unwrap_or("")))
        };
        if let Some(name) = &self.name
            && labels.metric_name() != Some(name.as_str())
        {
            return false;
        }
        if self.or_matchers.is_empty() {
            all(&self.matchers)
        } else {
            // `{a="1" or b="2"}`: any group; plain matchers, if any, are one more group.
            (!self.matchers.is_empty() && all(&self.matchers))
                || self.or_matchers.iter().any(|g| all(g))
        }
    }

    /// A selector matching every series whose `__name__` is `name`.
    pub fn metric(name: &str) -> Self {
        Self {
            name: None,
            matchers: vec![Matcher::new(MatchOp::Equal, Labels::METRIC_NAME, name)],
            or_matchers: Vec::new(),
        }
    }
}

/// One push query: its alias, what it selects and its step.
#[derive(Clone, Debug)]
pub struct PushQuery {
    /// The query alias (what [`RangeQuery::query`] carries).
    pub alias: String,
    /// Which pushed series belong to it.
    pub selector: Selector,
    /// Its step in ms: the buffer keeps at most one sample per step of a series.
    pub step_ms: i64,
}

/// The bounds of a [`PushBuffer`]. See the module docs for their memory cost.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct PushLimits {
    /// Samples kept per series, at least 1.
    pub max_samples_per_series: usize,
    /// Samples kept over all series.
    pub max_samples: usize,
    /// How much earlier than asked a range read starts, in ms: remote_write delivers in
    /// batches (Prometheus sends every 5 s by default, later when retrying), so a sample may
    /// arrive after the score tick that covered its time; the next tick then still reads it.
    /// The scheduler ignores samples it has already scored.
    pub lateness_ms: i64,
}

impl Default for PushLimits {
    /// The config's defaults: 4,320 samples per series (three days at 1 m), 16 Mi in total
    /// (256 MiB); five minutes of lateness.
    fn default() -> Self {
        Self {
            max_samples_per_series: 4_320,
            max_samples: 16 << 20,
            lateness_ms: 300_000,
        }
    }
}

/// What one [`PushBuffer::ingest`] did with the samples it was given.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct IngestStats {
    /// Samples kept.
    pub accepted: usize,
    /// Less than 90% of a step after the last kept sample of their series: skipped.
    pub thinned: usize,
    /// Stale markers: dropped.
    pub stale: usize,
    /// Not newer than the last kept sample of their series: dropped.
    pub out_of_order: usize,
    /// Of series no push query selects: dropped.
    pub unmatched: usize,
    /// Dropped because the buffer was full: new samples refused, and older ones a series
    /// pushed out to make room (up to eight at a time).
    pub buffer_full: usize,
    /// New series kept.
    pub new_series: usize,
}

#[derive(Debug)]
struct Ring {
    samples: Samples,
    /// Indices of the push queries selecting this series.
    queries: QuerySet,
    /// The smallest step of those queries, in ms: at least 1, at most 49 days (four bytes, so
    /// that a ring with its hint and its labels fills two cache lines, not three).
    step_ms: u32,
    /// When a stale marker newer than every sample said the series ended: read back as a
    /// trailing stale marker, so the scheduler forgets the series instead of reporting it
    /// missing. A later sample clears it.
    ended: Option<Timestamp>,
    /// Where the scheduler keeps this series' state.
    hint: Hint,
}

/// A step in ms as a ring keeps it: at least 1.
fn narrow_step(step_ms: i64) -> u32 {
    u32::try_from(step_ms.max(1)).unwrap_or(u32::MAX)
}

/// A push query alias the buffer does not have.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("push source: {0:?} is not a push query")]
pub struct NotAPushQuery(pub String);

/// Pushed samples by series. See the module docs.
#[derive(Debug)]
pub struct PushBuffer {
    queries: Vec<PushQuery>,
    limits: PushLimits,
    series: HashMap<Labels, Ring, LabelsHash>,
    total: usize,
    /// When [`PushBuffer::expire_due`] last ran a pass.
    last_expiry: Option<Timestamp>,
}

/// How many expiry passes [`PushBuffer::expire_due`] makes per retention period: a series is
/// dropped at most a 96th of the retention late (15 minutes of a day).
const EXPIRY_PASSES: i64 = 96;

impl PushBuffer {
    /// Series per [`Self::ingest_batch`] and per batch of a read: enough for their cache
    /// misses to overlap, few enough to stay in cache until their turn (8 and 32 measured
    /// slower on the push-path bench).
    pub const BATCH: usize = 16;

    /// An empty buffer for `queries`.
    pub fn new(queries: Vec<PushQuery>, limits: PushLimits) -> Self {
        Self {
            queries,
            limits: PushLimits {
                max_samples_per_series: limits.max_samples_per_series.max(1),
                ..limits
            },
            series: HashMap::default(),
            total: 0,
            last_expiry: None,
        }
    }

    /// Replaces the queries and limits (a reloaded config): series are matched again, those
    /// no query selects any more are dropped, rings over the new bounds are trimmed (oldest
    /// first). Returns how many series were dropped.
    pub fn set_queries(&mut self, queries: Vec<PushQuery>, limits: PushLimits) -> usize {
        self.queries = queries;
        self.limits = PushLimits {
            max_samples_per_series: limits.max_samples_per_series.max(1),
            ..limits
        };
        let before = self.series.len();
        let mut series = std::mem::take(&mut self.series);
        series.retain(|labels, ring| match self.selecting(labels) {
            Some((queries, step_ms)) => {
                ring.queries = queries;
                ring.step_ms = narrow_step(step_ms);
                true
            }
            None => false,
        });
        self.series = series;
        let per_series = self.limits.max_samples_per_series;
        for ring in self.series.values_mut() {
            let over = ring.samples.len().saturating_sub(per_series);
            ring.samples.pop_front_n(over);
        }
        self.total = self.series.values().map(|r| r.samples.len()).sum();
        // Over the total after a shrink: drop oldest samples round-robin until under it.
        while self.total > self.limits.max_samples {
            let mut removed = false;
            for ring in self.series.values_mut() {
                if self.total <= self.limits.max_samples {
                    break;
                }
                if ring.samples.pop_front_n(1) == 1 {
                    self.total -= 1;
                    removed = true;
                }
            }
            if !removed {
                break;
            }
        }
        self.series.retain(|_, r| !r.samples.is_empty());
        before - self.series.len()
    }

    /// The queries selecting `labels` and their smallest step; `None` if none does.
    fn selecting(&self, labels: &Labels) -> Option<(QuerySet, i64)> {
        let mut queries = QuerySet::default();
        let mut step = i64::MAX;
        for (i, q) in self.queries.iter().enumerate() {
            if q.selector.matches(labels) {
                queries.insert(i);
                step = step.min(q.step_ms.max(1));
            }
        }
        (!queries.is_empty()).then_some((queries, step))
    }

    /// Takes the series of one remote_write request.
    pub fn ingest(&mut self, series: Vec<Series>) -> IngestStats {
        let mut stats = IngestStats::default();
        for s in series {
            self.ingest_series(LabelsRef::from(&s.labels), &s.samples, &mut stats);
        }
        stats
    }

    /// Takes one series' samples, counting what became of them in `stats`. The series is
    /// looked up by `labels` as given (borrowed from a request body, say): its [`Labels`] are
    /// built only if it is new and kept.
    pub fn ingest_series(
        &mut self,
        labels: LabelsRef<'_>,
        samples: &[Sample],
        stats: &mut IngestStats,
    ) {
        let key = Key(labels);
        let series = self.series.len();
        if let Some(ring) = self.series.get_mut(&key) {
            append(ring, samples, self.limits, &mut self.total, series, stats);
            if ring.samples.is_empty() {
                self.series.remove(&key);
            }
            return;
        }
        let labels = labels.to_labels();
        let Some((queries, step_ms)) = self.selecting(&labels) else {
            stats.unmatched += samples.len();
            return;
        };
        if self.total >= self.limits.max_samples {
            stats.buffer_full += samples.len();
            return;
        }
        if samples.iter().all(|x| is_stale_marker(x.v)) {
            stats.stale += samples.len();
            return;
        }
        let mut ring = Ring {
            samples: Samples::default(),
            queries,
            step_ms: narrow_step(step_ms),
            ended: None,
            hint: Hint::default(),
        };
        stats.new_series += 1;
        let series = self.series.len() + 1;
        append(
            &mut ring,
            samples,
            self.limits,
            &mut self.total,
            series,
            stats,
        );
        if !ring.samples.is_empty() {
            self.series.insert(labels, ring);
        }
    }

    /// Takes a batch of series (a few from one request), as [`Self::ingest_series`] would one
    /// by one, with the same result. At 100,000 series each lookup waits on two or three
    /// cache misses (the map's bucket, the series' labels, the end of its ring), and one by
    /// one those waits follow each other. So a light first pass finds each series by its hash
    /// alone (a load whose misses the processor overlaps across the batch) and asks for its
    /// labels and ring in cache ([`portent_core::prefetch`]); the real pass then finds them
    /// there. Batches of [`Self::BATCH`] suit.
    pub fn ingest_batch(&mut self, batch: &[(LabelsRef<'_>, &[Sample])], stats: &mut IngestStats) {
        for (labels, _) in batch {
            let hash = LabelsHash.hash_one(labels);
            if let Some((known, ring)) = self.series.get_key_value(&SameHash(hash)) {
                known.prefetch();
                ring.samples.prefetch();
            }
        }
        for &(labels, samples) in batch {
            self.ingest_series(labels, samples, stats);
        }
    }

    /// Drops every series whose newest sample is older than `before`; returns how many.
    pub fn expire(&mut self, before: Timestamp) -> usize {
        let n = self.series.len();
        let mut freed = 0;
        self.series.retain(|_, r| {
            let keep = r.samples.back().is_some_and(|s| s.t >= before);
            if !keep {
                freed += r.samples.len();
            }
            keep
        });
        self.total -= freed;
        n - self.series.len()
    }

    /// [`Self::expire`]s the series unseen for `retention_ms` before `now`, at most once per
    /// [`EXPIRY_PASSES`]th of the retention; returns how many went. A pass reads every
    /// series' newest sample, a cache miss each at 100,000 series: run on every score tick it
    /// was 1.6% of the daemon's CPU, for a retention of a day.
    pub fn expire_due(&mut self, now: Timestamp, retention_ms: i64) -> usize {
        let every = (retention_ms / EXPIRY_PASSES).max(1);
        if self
            .last_expiry
            .is_some_and(|last| (0..every).contains(&now.millis_since(last)))
        {
            return 0;
        }
        self.last_expiry = Some(now);
        self.expire(now.add_millis(-retention_ms))
    }

    /// Series held.
    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    /// Samples held, over all series.
    pub fn sample_count(&self) -> usize {
        self.total
    }

    /// An estimate of the memory the buffer holds, in bytes: its table (with spare room),
    /// each series' samples (as they are and packed) and its label set, without the
    /// allocator's rounding.
    pub fn approx_bytes(&self) -> usize {
        let slot = size_of::<(Labels, Ring)>() + 1;
        self.series.capacity() * slot
            + self
                .series
                .iter()
                .map(|(l, r)| l.heap_bytes() + r.samples.heap_bytes())
                .sum::<usize>()
    }

    /// Whether `alias` is one of the buffer's queries.
    pub fn has_query(&self, alias: &str) -> bool {
        self.queries.iter().any(|q| q.alias == alias)
    }
}

/// A [`LabelsRef`] as a key of the buffer's map: hashes as the [`Labels`] it matches.
struct Key<'a>(LabelsRef<'a>);

impl Hash for Key<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl Equivalent<Labels> for Key<'_> {
    fn equivalent(&self, labels: &Labels) -> bool {
        self.0.matches(labels)
    }
}

/// A lookup by hash alone, for [`PushBuffer::ingest_batch`]'s first pass: it may find another
/// series of the same hash, which only costs that pass a useless load.
struct SameHash(u64);

impl Hash for SameHash {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0);
    }
}

impl Equivalent<Labels> for SameHash {
    fn equivalent(&self, labels: &Labels) -> bool {
        LabelsHash.hash_one(labels) == self.0
    }
}

/// Appends `samples` to `ring` under the buffer's `limits` (`total`: samples over all
/// series), dropping and counting stale markers, out-of-order samples and those under a step
/// after the last kept one.
fn append(
    ring: &mut Ring,
    samples: &[Sample],
    limits: PushLimits,
    total: &mut usize,
    series: usize,
    stats: &mut IngestStats,
) {
    let shape = Shape {
        // The ring's share of the bounds when full: what it is given room for at once.
        expect: limits
            .max_samples_per_series
            .min(limits.max_samples / series.max(1)),
        // What a score tick reads: the lateness, the tick's own step and two to spare (ticks
        // every few steps read further, and decode the packed part).
        keep: usize::try_from(limits.lateness_ms / i64::from(ring.step_ms))
            .unwrap_or(0)
            .saturating_add(3)
            .min(MAX_KEEP),
    };
    let share = shape.expect.max(1);
    for &x in samples {
        if is_stale_marker(x.v) {
            stats.stale += 1;
            if ring.samples.back().is_some_and(|last| x.t > last.t) {
                ring.ended = Some(x.t);
            }
            continue;
        }
        if ring.ended.is_some_and(|e| x.t <= e) {
            stats.out_of_order += 1;
            continue;
        }
        ring.ended = None;
        if let Some(last) = ring.samples.back() {
            if x.t <= last.t {
                stats.out_of_order += 1;
                continue;
            }
            // 90% of a step: scrape timestamps jitter by a few ms either way.
            let step = i64::from(ring.step_ms);
            if x.t.millis_since(last.t) < step - step / 10 {
                stats.thinned += 1;
                continue;
            }
        }
        // A ring at its share of the bounds makes room for each new sample itself. Were only
        // the total capped, whichever series pushed while the buffer was full would lose its
        // oldest samples, and remote_write sends series in a stable order: the same ones lost
        // theirs every time while the others grew past the room their rings were given, and the
        // rings that grew again left their old blocks behind (120 MB of resident memory at
        // 100,000 series, BENCHMARKS.md).
        if ring.samples.len() >= share {
            *total -= ring.samples.pop_front_n(drop_batch(share));
        } else if *total >= limits.max_samples {
            let dropped = ring.samples.pop_front_n(drop_batch(ring.samples.len()));
            if dropped == 0 {
                stats.buffer_full += 1;
                continue;
            }
            *total -= dropped;
            stats.buffer_full += dropped;
        }
        ring.samples.push_back(x, shape);
        *total += 1;
        stats.accepted += 1;
    }
}

/// Indices of the push queries selecting a series. The first 64 are bits inline: every read
/// asks each series whether a query selects it, and a list on the heap would be one more
/// cache miss per series at 100,000 of them. Configs with more push queries keep the rest in
/// a list.
#[derive(Debug, Default)]
struct QuerySet {
    low: u64,
    high: Vec<usize>,
}

impl QuerySet {
    fn insert(&mut self, i: usize) {
        if i < 64 {
            self.low |= 1u64 << i;
        } else {
            self.high.push(i);
        }
    }

    fn contains(&self, i: usize) -> bool {
        if i < 64 {
            self.low & (1u64 << i) != 0
        } else {
            self.high.contains(&i)
        }
    }

    fn is_empty(&self) -> bool {
        self.low == 0 && self.high.is_empty()
    }
}

/// The most samples a ring keeps unpacked for score ticks (a 1 s step with five minutes of
/// lateness reads 303).
const MAX_KEEP: usize = 512;

/// How many of a series' oldest samples go when it must make room for a new one: eight at a
/// time (fewer for a ring of under 64), so that the packed part of the ring, a cache miss away
/// at 100,000 series, is touched once per eight pushes rather than on each.
fn drop_batch(len: usize) -> usize {
    (len / 8).clamp(1, 8)
}

impl HistorySource for PushBuffer {
    type Error = NotAPushQuery;

    /// Every held series the query selects, with its samples in
    /// `[start - lateness, end]`; series with none there are left out.
    fn query_range(&mut self, q: &RangeQuery<'_>) -> Result<Vec<Series>, NotAPushQuery> {
        let mut out = Vec::new();
        self.visit_range(q, &mut |labels, samples, _| {
            out.push(Series {
                labels: labels.clone(),
                samples: samples.to_vec(),
            });
        })?;
        Ok(out)
    }

    /// As [`Self::query_range`], lending each series' label set and its samples (copied
    /// into one reused buffer, as a ring's range may wrap around its end).
    fn visit_range(
        &mut self,
        q: &RangeQuery<'_>,
        visit: &mut dyn FnMut(&Labels, &[Sample], &Hint),
    ) -> Result<(), NotAPushQuery> {
        let Some(index) = self.queries.iter().position(|p| p.alias == q.query) else {
            return Err(NotAPushQuery(q.query.to_owned()));
        };
        let start = q.start.add_millis(-self.limits.lateness_ms);
        let mut samples = Vec::new();
        let mut batch = Vec::with_capacity(Self::BATCH);
        let mut series = self
            .series
            .iter()
            .filter(|(_, r)| r.queries.contains(index));
        loop {
            batch.clear();
            batch.extend(series.by_ref().take(Self::BATCH));
            if batch.is_empty() {
                return Ok(());
            }
            // Each ring's newest samples are a cache miss, and so is each label set's
            // allocation, whose reference count the score tick touches when it keeps the
            // series' verdict (a tenth of the daemon's cycles at 100,000 series, stalled on
            // that one increment): asked for the whole batch first, the misses overlap.
            for (labels, r) in &batch {
                labels.prefetch();
                r.samples.prefetch();
            }
            for (labels, r) in &batch {
                samples.clear();
                r.samples.read(start, q.end, &mut samples);
                if let Some(e) = r.ended.filter(|e| *e >= start && *e <= q.end) {
                    samples.push(Sample::new(e, f64::from_bits(STALE_NAN_BITS)));
                }
                if !samples.is_empty() {
                    visit(labels, &samples, &r.hint);
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::new(pairs.iter().copied()).unwrap()
    }

    fn series(l: &Labels, points: &[(i64, f64)]) -> Series {
        Series {
            labels: l.clone(),
            samples: points
                .iter()
                .map(|&(t, v)| Sample::new(Timestamp::from_millis(t), v))
                .collect(),
        }
    }

    fn query(alias: &str, expr: &str, step_ms: i64) -> PushQuery {
        PushQuery {
            alias: alias.into(),
            selector: Selector::parse(expr).unwrap(),
            step_ms,
        }
    }

    fn read(b: &mut PushBuffer, alias: &str, start: i64, end: i64) -> Vec<Series> {
        let mut got = b
            .query_range(&RangeQuery {
                query: alias,
                expr: "",
                start: Timestamp::from_millis(start),
                end: Timestamp::from_millis(end),
                step_ms: MIN,
                request: crate::Request::Score,
            })
            .unwrap();
        got.sort_by(|a, b| a.labels.cmp(&b.labels));
        got
    }

    fn limits(per_series: usize, total: usize) -> PushLimits {
        PushLimits {
            max_samples_per_series: per_series,
            max_samples: total,
            lateness_ms: 0,
        }
    }

    #[test]
    fn selectors_match_like_prometheus() {
        let api_500 = labels(&[
            ("__name__", "http_requests_total"),
            ("job", "api"),
            ("code", "500"),
        ]);
        let web_200 = labels(&[
            ("__name__", "http_requests_total"),
            ("job", "web"),
            ("code", "200"),
        ]);
        let other = labels(&[("__name__", "up"), ("job", "api")]);
        let m = |expr: &str, l: &Labels| Selector::parse(expr).unwrap().matches(l);
        assert!(m("http_requests_total", &api_500));
        assert!(!m("http_requests_total", &other));
        assert!(m(r#"http_requests_total{job="api"}"#, &api_500));
        assert!(!m(r#"http_requests_total{job="api"}"#, &web_200));
        assert!(m(r#"http_requests_total{job!="api"}"#, &web_200));
        // Regexes are anchored, as in Prometheus.
        assert!(m(r#"{code=~"5.."}"#, &api_500));
        assert!(!m(r#"{code=~"5"}"#, &api_500));
        assert!(m(r#"{__name__=~"http_.*", code!~"2.."}"#, &api_500));
        assert!(!m(r#"{__name__=~"http_.*", code!~"2.."}"#, &web_200));
        // A missing label is "".
        assert!(m(r#"up{code!="500"}"#, &other));
        assert!(m(r#"up{code=""}"#, &other));
        assert!(!m(r#"up{code=~".+"}"#, &other));
        assert!(m(r#"{job="web" or code="500"}"#, &api_500));
        assert!(Selector::parse("rate(x[5m])").is_err());
        assert!(Selector::parse("x offset 5m").is_err());
        assert!(Selector::parse("x{").is_err());
        assert!(Selector::metric("up").matches(&other));
    }

    #[test]
    fn a_series_belongs_to_every_query_that_selects_it_and_only_those() {
        let mut b = PushBuffer::new(
            vec![
                query("all", "http_requests_total", MIN),
                query("api", r#"http_requests_total{job="api"}"#, MIN),
            ],
            limits(100, 1000),
        );
        let api = labels(&[("__name__", "http_requests_total"), ("job", "api")]);
        let web = labels(&[("__name__", "http_requests_total"), ("job", "web")]);
        let up = labels(&[("__name__", "up")]);
        let stats = b.ingest(vec![
            series(&api, &[(0, 1.0), (MIN, 2.0)]),
            series(&web, &[(0, 3.0)]),
            series(&up, &[(0, 1.0), (MIN, 1.0)]),
        ]);
        assert_eq!(stats.accepted, 3);
        assert_eq!(stats.unmatched, 2);
        assert_eq!(stats.new_series, 2);
        assert_eq!(b.series_count(), 2);
        let all = read(&mut b, "all", 0, 10 * MIN);
        assert_eq!(all.len(), 2);
        let only_api = read(&mut b, "api", 0, 10 * MIN);
        assert_eq!(only_api.len(), 1);
        assert_eq!(only_api[0].labels, api);
        assert_eq!(only_api[0].samples.len(), 2);
        // Inclusive range.
        assert_eq!(read(&mut b, "api", MIN, MIN)[0].samples.len(), 1);
        assert!(read(&mut b, "api", 2 * MIN, 3 * MIN).is_empty());
        assert_eq!(
            b.query_range(&RangeQuery {
                query: "nope",
                expr: "",
                start: Timestamp::from_millis(0),
                end: Timestamp::from_millis(1),
                step_ms: 1,
                request: crate::Request::Score,
            })
            .unwrap_err()
            .to_string(),
            "push source: \"nope\" is not a push query"
        );
    }

    #[test]
    fn stale_markers_out_of_order_and_duplicates_are_dropped_and_counted() {
        let mut b = PushBuffer::new(vec![query("q", "x", 1_000)], limits(100, 1000));
        let x = labels(&[("__name__", "x")]);
        let stale = f64::from_bits(STALE_NAN_BITS);
        let stats = b.ingest(vec![series(
            &x,
            &[
                (10_000, 1.0),
                (11_000, f64::NAN),
                (11_000, 5.0),
                (9_000, 2.0),
                (12_000, stale),
                (13_000, 3.0),
                (13_500, 4.0),
            ],
        )]);
        assert_eq!(stats.accepted, 3);
        assert_eq!(stats.out_of_order, 2);
        assert_eq!(stats.stale, 1);
        assert_eq!(stats.thinned, 1);
        let got = read(&mut b, "q", 0, 100_000);
        let ts: Vec<i64> = got[0].samples.iter().map(|s| s.t.millis()).collect();
        assert_eq!(ts, [10_000, 11_000, 13_000]);
        assert!(got[0].samples[1].v.is_nan(), "ordinary NaN is kept");
        // A later request older than what is held changes nothing.
        let again = b.ingest(vec![series(&x, &[(5_000, 1.0)])]);
        assert_eq!(again.out_of_order, 1);
        assert_eq!(b.sample_count(), 3);
        // A new series of stale markers only is not created.
        let y = labels(&[("__name__", "x"), ("a", "b")]);
        let s = b.ingest(vec![series(&y, &[(1, stale)])]);
        assert_eq!((s.stale, s.new_series), (1, 0));
        assert_eq!(b.series_count(), 1);
    }

    #[test]
    fn samples_are_thinned_to_the_step() {
        let mut b = PushBuffer::new(vec![query("q", "x", MIN)], limits(100, 1000));
        let x = labels(&[("__name__", "x")]);
        // 15 s scrapes with a little jitter for 10 minutes: one kept a minute.
        let points: Vec<(i64, f64)> = (0..40)
            .map(|i| (i * 15_000 + (i % 3) * 7 - 7, i as f64))
            .collect();
        let stats = b.ingest(vec![series(&x, &points)]);
        assert_eq!(stats.accepted, 10);
        assert_eq!(stats.thinned, 30);
    }

    #[test]
    fn a_full_ring_drops_its_oldest_eight_at_a_time_and_reads_exactly() {
        // Past its bound a ring drops eight of its oldest at once; whatever it holds reads
        // back exactly (packed or not), and the total counts every sample held.
        let mut b = PushBuffer::new(vec![query("q", "x", 1)], limits(100, 10_000));
        let x = labels(&[("__name__", "x")]);
        for t in 0..1_000i64 {
            let v = (t as f64 * 0.37).sin() * 1e3 + t as f64;
            b.ingest(vec![series(&x, &[(t, v)])]);
            let held = b.sample_count();
            assert!((93..=100).contains(&held) || t < 100, "{t}: {held}");
            let got = read(&mut b, "q", i64::MIN / 2, i64::MAX / 2);
            let ts: Vec<i64> = got[0].samples.iter().map(|s| s.t.millis()).collect();
            let want: Vec<i64> = (t + 1 - held as i64..=t).collect();
            assert_eq!(ts, want);
            let last = got[0].samples.last().unwrap();
            assert_eq!(last.v.to_bits(), v.to_bits());
        }
    }

    #[test]
    fn a_batch_ingests_as_its_series_one_by_one() {
        // New and known series, a series twice in one batch, a stale marker, an old sample
        // and an unmatched series: the same counts and the same buffer either way.
        let x = |s: &str| labels(&[("__name__", "x"), ("s", s)]);
        let y = labels(&[("__name__", "y")]);
        let stale = f64::from_bits(STALE_NAN_BITS);
        let requests = [
            vec![series(&x("a"), &[(1, 1.0)]), series(&x("b"), &[(1, 2.0)])],
            vec![
                series(&x("a"), &[(2, 1.0)]),
                series(&x("a"), &[(2, 5.0), (3, 1.0)]),
                series(&x("c"), &[(3, 1.0)]),
                series(&y, &[(3, 1.0)]),
                series(&x("b"), &[(0, 1.0), (4, stale)]),
            ],
        ];
        let mut one = PushBuffer::new(vec![query("q", "x", 1)], limits(3, 100));
        let mut batched = PushBuffer::new(vec![query("q", "x", 1)], limits(3, 100));
        for request in &requests {
            let mut a = IngestStats::default();
            for s in request {
                one.ingest_series(LabelsRef::from(&s.labels), &s.samples, &mut a);
            }
            let refs: Vec<(LabelsRef<'_>, &[Sample])> = request
                .iter()
                .map(|s| (LabelsRef::from(&s.labels), &s.samples[..]))
                .collect();
            let mut b = IngestStats::default();
            for chunk in refs.chunks(2) {
                batched.ingest_batch(chunk, &mut b);
            }
            assert_eq!(a, b);
        }
        // Bit for bit: the stale marker is a NaN.
        let bits = |b: &mut PushBuffer| -> Vec<(Labels, Vec<(i64, u64)>)> {
            read(b, "q", 0, 10)
                .into_iter()
                .map(|s| {
                    let v = s.samples.iter().map(|x| (x.t.millis(), x.v.to_bits()));
                    (s.labels, v.collect())
                })
                .collect()
        };
        assert_eq!(bits(&mut one), bits(&mut batched));
        assert_eq!(one.sample_count(), batched.sample_count());
    }

    fn x_series(i: usize) -> Labels {
        labels(&[("__name__", "x"), ("s", &format!("many-{i}"))])
    }

    #[test]
    fn visiting_lends_what_a_read_copies() {
        let mut b = PushBuffer::new(vec![query("q", "x", 1)], limits(5, 100));
        let a = labels(&[("__name__", "x"), ("s", "a")]);
        let c = labels(&[("__name__", "x"), ("s", "c")]);
        let points: Vec<(i64, f64)> = (0..20).map(|i| (i, i as f64)).collect();
        // A wrapped ring (20 samples through 5 slots) and a short one.
        b.ingest(vec![series(&a, &points), series(&c, &points[..2])]);
        let q = RangeQuery {
            query: "q",
            expr: "",
            start: Timestamp::from_millis(1),
            end: Timestamp::from_millis(18),
            step_ms: 1,
            request: crate::Request::Score,
        };
        let mut lent = Vec::new();
        b.visit_range(&q, &mut |l, s, _| lent.push((l.clone(), s.to_vec())))
            .unwrap();
        lent.sort_by(|x, y| x.0.cmp(&y.0));
        let mut copied = b.query_range(&q).unwrap();
        copied.sort_by(|x, y| x.labels.cmp(&y.labels));
        assert_eq!(lent.len(), 2);
        for ((l, s), series) in lent.iter().zip(&copied) {
            assert!(Labels::ptr_eq(l, &series.labels));
            assert_eq!(s, &series.samples);
        }
        let ts: Vec<i64> = lent[0].1.iter().map(|s| s.t.millis()).collect();
        assert_eq!(ts, [15, 16, 17, 18]);
        // Past one batch of rings: every series once, with its samples.
        let many: Vec<Series> = (0..2 * PushBuffer::BATCH + 3)
            .map(|i| series(&x_series(i), &[(5, i as f64), (6, 1.0)]))
            .collect();
        b.ingest(many);
        let mut seen = Vec::new();
        b.visit_range(&q, &mut |l, s, _| seen.push((l.to_string(), s.len())))
            .unwrap();
        seen.sort();
        assert_eq!(seen.len(), 2 * PushBuffer::BATCH + 5);
        seen.dedup_by(|a, b| a.0 == b.0);
        assert_eq!(seen.len(), 2 * PushBuffer::BATCH + 5);
        let mut visited = 0;
        let unknown = RangeQuery { query: "nope", ..q };
        let err = b.visit_range(&unknown, &mut |_, _, _| visited += 1);
        assert_eq!(err, Err(NotAPushQuery("nope".into())));
        assert_eq!(visited, 0);
    }

    #[test]
    fn expiry_passes_run_once_per_96th_of_the_retention() {
        let mut b = PushBuffer::new(vec![query("q", "x", 1)], limits(100, 1000));
        let a = labels(&[("__name__", "x"), ("s", "a")]);
        let c = labels(&[("__name__", "x"), ("s", "c")]);
        b.ingest(vec![series(&a, &[(0, 1.0)]), series(&c, &[(5_000, 1.0)])]);
        let retention = 96_000; // a pass every 1,000 ms
        let at = Timestamp::from_millis;
        // The first call makes a pass: nothing is older than 96 s yet.
        assert_eq!(b.expire_due(at(96_000), retention), 0);
        // a is now unseen for more than the retention, but the last pass was under 1 s ago.
        assert_eq!(b.expire_due(at(96_500), retention), 0);
        assert_eq!(b.series_count(), 2);
        assert_eq!(b.expire_due(at(97_000), retention), 1);
        assert_eq!(b.series_count(), 1);
        // c goes at 104 s (unseen for 99 s); a clock that went back makes a pass at once.
        assert_eq!(b.expire_due(at(104_000), retention), 1);
        assert_eq!(b.expire_due(at(103_000), retention), 0);
        assert_eq!(b.last_expiry, Some(at(103_000)));
    }

    #[test]
    fn bounded_per_series_and_in_total() {
        let mut b = PushBuffer::new(vec![query("q", "x", 1)], limits(5, 12));
        let a = labels(&[("__name__", "x"), ("s", "a")]);
        let points: Vec<(i64, f64)> = (0..20).map(|i| (i, i as f64)).collect();
        b.ingest(vec![series(&a, &points)]);
        // The ring keeps the 5 newest.
        let got = read(&mut b, "q", 0, 100);
        let ts: Vec<i64> = got[0].samples.iter().map(|s| s.t.millis()).collect();
        assert_eq!(ts, [15, 16, 17, 18, 19]);
        let bl = labels(&[("__name__", "x"), ("s", "b")]);
        let c = labels(&[("__name__", "x"), ("s", "c")]);
        let d = labels(&[("__name__", "x"), ("s", "d")]);
        b.ingest(vec![series(&bl, &points), series(&c, &points[..2])]);
        assert_eq!(b.sample_count(), 12);
        // Full: a new series is refused, an existing one cannot grow.
        let s = b.ingest(vec![series(&d, &points[..3])]);
        assert_eq!((s.buffer_full, s.new_series), (3, 0));
        let s = b.ingest(vec![series(&c, &[(100, 1.0), (101, 1.0)])]);
        assert_eq!((s.accepted, s.buffer_full), (2, 2));
        assert_eq!(b.sample_count(), 12);
        let c_now = read(&mut b, "q", 0, 1000)
            .into_iter()
            .find(|s| s.labels == c)
            .unwrap();
        assert_eq!(c_now.samples.len(), 2);
        assert_eq!(c_now.samples[1].t.millis(), 101);
        // Expiry frees room.
        assert_eq!(b.expire(Timestamp::from_millis(50)), 2);
        assert_eq!(b.sample_count(), 2);
        assert_eq!(b.ingest(vec![series(&d, &points[..3])]).new_series, 1);
    }

    #[test]
    fn a_full_buffer_is_shared_evenly_whatever_order_series_come_in() {
        // Remote_write sends series in the same order every time. Were only the total capped,
        // the series pushing while the buffer was full would lose eight samples each time and
        // the others grow: here the four ended with 75, 170, 266 and 282 samples.
        let share = 200;
        let mut b = PushBuffer::new(vec![query("q", "x", 1)], limits(10_000, 4 * share));
        let names: Vec<Labels> = (0..4)
            .map(|i| labels(&[("__name__", "x"), ("s", &i.to_string())]))
            .collect();
        let mut stats = IngestStats::default();
        for t in 0..1_000 {
            for l in &names {
                b.ingest_series(
                    LabelsRef::from(l),
                    &[Sample::new(Timestamp::from_millis(t), t as f64)],
                    &mut stats,
                );
            }
        }
        assert_eq!(stats.buffer_full, 0);
        for got in read(&mut b, "q", 0, 1_000) {
            let n = got.samples.len();
            assert!((share - 8..=share).contains(&n), "{}: {n}", got.labels);
            assert_eq!(got.samples.last().map(|s| s.t.millis()), Some(999));
        }
    }

    #[test]
    fn reloaded_queries_rematch_and_trim() {
        let mut b = PushBuffer::new(
            vec![query("a", r#"x{s="a"}"#, 1), query("b", r#"x{s="b"}"#, 1)],
            limits(10, 100),
        );
        let a = labels(&[("__name__", "x"), ("s", "a")]);
        let bl = labels(&[("__name__", "x"), ("s", "b")]);
        let points: Vec<(i64, f64)> = (0..10).map(|i| (i, 1.0)).collect();
        b.ingest(vec![series(&a, &points), series(&bl, &points)]);
        let dropped = b.set_queries(vec![query("all", "x", 1)], limits(4, 6));
        assert_eq!(dropped, 0);
        assert_eq!(read(&mut b, "all", 0, 100).len(), 2);
        assert!(b.sample_count() <= 6);
        let dropped = b.set_queries(vec![query("a", r#"x{s="a"}"#, 1)], limits(4, 6));
        assert_eq!(dropped, 1);
        assert_eq!(b.series_count(), 1);
        assert_eq!(b.sample_count(), read(&mut b, "a", 0, 100)[0].samples.len());
    }

    #[test]
    fn borrowed_decoded_labels_find_the_series_their_labels_made() {
        let mut b = PushBuffer::new(vec![query("q", "x", MIN)], limits(100, 1000));
        let x = labels(&[("__name__", "x"), ("pod", "a")]);
        assert_eq!(b.ingest(vec![series(&x, &[(0, 1.0)])]).new_series, 1);
        // The same pairs borrowed (as a decoded request carries them): the same ring, and the
        // buffer keeps the label set it has rather than building another.
        let pairs = [("__name__", "x"), ("pod", "a")];
        let mut stats = IngestStats::default();
        let at = [Sample::new(Timestamp::from_millis(MIN), 2.0)];
        b.ingest_series(LabelsRef::canonical(&pairs).unwrap(), &at, &mut stats);
        assert_eq!((stats.new_series, stats.accepted), (0, 1));
        assert_eq!(b.series_count(), 1);
        let got = read(&mut b, "q", 0, 10 * MIN);
        assert!(Labels::ptr_eq(&got[0].labels, &x));
        assert_eq!(got[0].samples.len(), 2);
        // Other pairs are another series.
        let other = [("__name__", "x"), ("pod", "b")];
        b.ingest_series(LabelsRef::canonical(&other).unwrap(), &at, &mut stats);
        assert_eq!((stats.new_series, b.series_count()), (1, 2));
    }

    #[test]
    fn query_sets_hold_any_index() {
        let mut q = QuerySet::default();
        assert!(q.is_empty());
        for i in [0, 5, 63, 64, 200] {
            q.insert(i);
        }
        assert!(!q.is_empty());
        for i in 0..300 {
            assert_eq!(q.contains(i), [0, 5, 63, 64, 200].contains(&i), "{i}");
        }
    }

    #[test]
    fn lateness_widens_reads_backwards() {
        let mut b = PushBuffer::new(
            vec![query("q", "x", 1_000)],
            PushLimits {
                lateness_ms: 5_000,
                ..limits(100, 100)
            },
        );
        let x = labels(&[("__name__", "x")]);
        b.ingest(vec![series(&x, &[(1_000, 1.0), (8_000, 2.0)])]);
        assert_eq!(read(&mut b, "q", 9_000, 10_000)[0].samples.len(), 1);
        assert_eq!(read(&mut b, "q", 5_000, 10_000)[0].samples.len(), 2);
    }
}
