//! The push source of `serve`: the remote_write receiver on `server.listen`, feeding the
//! engine's [`PushBuffer`], and the source the scheduler reads, which routes each query to
//! the pull client or the push buffer by the query's `source`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::Response;
use portent_config::{Config, QuerySource};
use portent_core::{Labels, Sample, Series};
use portent_engine::{
    Hint, HistorySource, IngestStats, PushBuffer, PushLimits, PushQuery, RangeQuery,
};
use portent_prom::{DecodedWrite, ReceiverLimits, Sink, SinkClosed, remote_write_router};
use portent_server::SelfMetrics;

use crate::pull::PullSource;
use crate::serve::lock;

/// The push queries of `config`, their selectors parsed (the config checked that they are
/// plain selectors).
pub(crate) fn push_queries(config: &Config) -> Result<Vec<PushQuery>> {
    config
        .queries
        .iter()
        .filter(|(_, q)| q.source == QuerySource::Push)
        .map(|(alias, q)| {
            Ok(PushQuery {
                alias: alias.to_string(),
                selector: portent_engine::Selector::parse(&q.expr)
                    .with_context(|| format!("queries.{alias}.expr"))?,
                step_ms: i64::try_from(q.step.as_millis()).unwrap_or(i64::MAX),
            })
        })
        .collect()
}

/// The push buffer's bounds from `config` (defaults when there is no push source).
pub(crate) fn push_limits(config: &Config) -> PushLimits {
    let mut limits = PushLimits::default();
    if let Some(push) = &config.source.push {
        limits.max_samples_per_series = push.max_samples_per_series;
        limits.max_samples = push.max_samples;
        limits.lateness_ms = i64::try_from(push.lateness.as_millis()).unwrap_or(i64::MAX);
    }
    limits
}

/// Where the receiver puts what it decoded: the buffer, with the counts in the self-metrics.
#[derive(Clone)]
pub(crate) struct PushSink {
    pub(crate) buffer: Arc<Mutex<PushBuffer>>,
    pub(crate) metrics: SelfMetrics,
}

impl PushSink {
    /// Puts `series` in the buffer and counts them: how the demo's cluster pushes.
    pub(crate) fn ingest(&self, series: Vec<Series>) {
        self.ingest_with(|b| b.ingest(series));
    }

    /// Puts one remote_write request's series in the buffer and counts them. Known series are
    /// looked up by the labels as decoded, without building their `Labels`.
    pub(crate) fn ingest_write(&self, write: &DecodedWrite) {
        self.ingest_with(|b| {
            let mut stats = IngestStats::default();
            write.for_each_batch(PushBuffer::BATCH, |batch| b.ingest_batch(batch, &mut stats));
            stats
        });
    }

    fn ingest_with(&self, f: impl FnOnce(&mut PushBuffer) -> IngestStats) {
        let (stats, n, samples) = {
            let mut b = lock(&self.buffer);
            let stats = f(&mut b);
            (stats, b.series_count(), b.sample_count())
        };
        record(&self.metrics, &stats);
        self.metrics.set_push_buffer(n, samples);
    }
}

impl Sink for PushSink {
    async fn accept(&self, write: &DecodedWrite) -> Result<(), SinkClosed> {
        // Ingesting is well under a microsecond per series under the buffer's lock: fine to
        // do here, on the async thread. A score tick of push queries holds the lock while it
        // scores (tens of milliseconds at 100,000 series, once a minute): a request arriving
        // then waits that long.
        self.ingest_write(write);
        Ok(())
    }
}

fn record(metrics: &SelfMetrics, s: &IngestStats) {
    let n = |x: usize| u64::try_from(x).unwrap_or(u64::MAX);
    // Thinned samples are not counted anywhere but ingested: they were received fine, the
    // buffer just keeps one per step.
    metrics.add_samples_ingested("push", n(s.accepted + s.thinned));
    metrics.add_push_dropped("stale", n(s.stale));
    metrics.add_push_dropped("out_of_order", n(s.out_of_order));
    metrics.add_push_dropped("unmatched", n(s.unmatched));
    metrics.add_push_dropped("buffer_full", n(s.buffer_full));
}

/// `POST /api/v1/write`, counting refused requests (4xx) in
/// `portent_source_errors_total{source="push"}`.
pub(crate) fn receiver(sink: PushSink, max_body_size: u64) -> Router {
    let max = usize::try_from(max_body_size).unwrap_or(usize::MAX);
    let limits = ReceiverLimits {
        max_body_bytes: max,
        // Snappy rarely compresses remote_write below a quarter; 4x leaves room for it.
        max_decompressed_bytes: max.saturating_mul(4),
    };
    let metrics = sink.metrics.clone();
    remote_write_router(sink, limits).layer(from_fn_with_state(metrics, count_refusals))
}

async fn count_refusals(State(metrics): State<SelfMetrics>, req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    if response.status().is_client_error() {
        metrics.inc_source_errors("push");
    }
    response
}

/// The scheduler's source in `serve`: push queries read the buffer, the others the pull
/// client.
pub(crate) struct Routed<'a> {
    pub(crate) pull: Option<PullSource>,
    pub(crate) push: &'a Mutex<PushBuffer>,
    pub(crate) push_queries: &'a HashSet<String>,
}

impl HistorySource for Routed<'_> {
    type Error = String;

    fn query_range(&mut self, q: &RangeQuery<'_>) -> Result<Vec<Series>, String> {
        if self.push_queries.contains(q.query) {
            return lock(self.push).query_range(q).map_err(|e| e.to_string());
        }
        match &mut self.pull {
            Some(pull) => pull.query_range(q).map_err(|e| e.to_string()),
            None => Err(format!(
                "query {:?} is a pull query but source.pull is not set",
                q.query
            )),
        }
    }

    /// A push query's series are scored straight from the buffer, under its lock: receivers
    /// wait for the score tick (tens of milliseconds at 100,000 series), which is cheaper than
    /// copying every series out of it.
    fn visit_range(
        &mut self,
        q: &RangeQuery<'_>,
        visit: &mut dyn FnMut(&Labels, &[Sample], &Hint),
    ) -> Result<(), String> {
        if self.push_queries.contains(q.query) {
            return lock(self.push)
                .visit_range(q, visit)
                .map_err(|e| e.to_string());
        }
        for s in self.query_range(q)? {
            visit(&s.labels, &s.samples, &Hint::default());
        }
        Ok(())
    }
}
