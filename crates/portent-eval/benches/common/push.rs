//! What the push-path bench (`benches/push_path.rs`) and the examples `mem_per_series` and
//! `push_loopback` share: the series they push, their values and bodies, and the glue that lets
//! the scheduler read the push buffer as the daemon does.

use std::sync::Mutex;

use portent_core::seeded::gauss;
use portent_core::{Labels, Sample, Series, Timestamp};
use portent_engine::{Hint, HistorySource, NotAPushQuery, PushBuffer, RangeQuery};

pub(crate) const METRIC: &str = portent_testkit::CADVISOR_CPU;
/// Series per remote_write request: Prometheus' default `queue_config.max_samples_per_send`.
pub(crate) const PER_REQUEST: usize = 2_000;
pub(crate) const MIN: i64 = 60_000;
pub(crate) const DAY: i64 = 1440 * MIN;
/// 2026-11-02, a Monday and a multiple of a week since the epoch plus four days: fits (weekly,
/// aligned to the epoch) stay out of the measured minutes.
pub(crate) const T0: i64 = 1_793_577_600_000;

/// Series `i`: eight Kubernetes-like labels, as cAdvisor's CPU series carry.
pub(crate) use portent_testkit::cadvisor_labels as labels;

/// Series `series`' value at `t`: a daily cycle around its own level, with seeded noise.
pub(crate) fn value(series: usize, t: i64) -> f64 {
    let day = std::f64::consts::TAU * (t.rem_euclid(DAY)) as f64 / DAY as f64;
    let level = 50.0 + (series % 97) as f64;
    level + 0.3 * level * day.sin() + 2.0 * gauss((t / MIN) as u64 ^ ((series as u64) << 24))
}

/// The remote_write bodies of the samples of `labels` at `t`, [`PER_REQUEST`] series each,
/// encoded one at a time as they are taken.
pub(crate) fn bodies(labels: &[Labels], t: i64) -> impl Iterator<Item = Vec<u8>> + '_ {
    labels
        .chunks(PER_REQUEST)
        .enumerate()
        .map(move |(c, chunk)| {
            let series: Vec<Series> = chunk
                .iter()
                .enumerate()
                .map(|(k, l)| Series {
                    labels: l.clone(),
                    samples: vec![Sample::new(
                        Timestamp::from_millis(t),
                        value(c * PER_REQUEST + k, t),
                    )],
                })
                .collect();
            portent_prom::encode_write_request(&series)
        })
}

/// The daemon's `Routed` for a push-only config: the scheduler reads the buffer behind the
/// mutex the receiver also takes.
pub(crate) struct Routed<'a>(pub(crate) &'a Mutex<PushBuffer>);

impl HistorySource for Routed<'_> {
    type Error = NotAPushQuery;

    fn query_range(&mut self, q: &RangeQuery<'_>) -> Result<Vec<Series>, NotAPushQuery> {
        match self.0.lock() {
            Ok(mut b) => b.query_range(q),
            Err(poisoned) => poisoned.into_inner().query_range(q),
        }
    }

    fn visit_range(
        &mut self,
        q: &RangeQuery<'_>,
        visit: &mut dyn FnMut(&Labels, &[Sample], &Hint),
    ) -> Result<(), NotAPushQuery> {
        match self.0.lock() {
            Ok(mut b) => b.visit_range(q, visit),
            Err(poisoned) => poisoned.into_inner().visit_range(q, visit),
        }
    }
}
