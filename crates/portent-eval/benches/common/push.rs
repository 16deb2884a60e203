//! What the push-path bench (`benches/push_path.rs`) and the memory example
//! (`examples/mem_per_series.rs`) share: the series they push, their values, and the glue that
//! lets the scheduler read the push buffer as the daemon does.

use std::sync::Mutex;

use portent_core::seeded::gauss;
use portent_core::{Labels, Sample, Series};
use portent_engine::{HistorySource, NotAPushQuery, PushBuffer, RangeQuery};

pub(crate) const METRIC: &str = "container_cpu_usage_seconds_total";
pub(crate) const MIN: i64 = 60_000;
pub(crate) const DAY: i64 = 1440 * MIN;
/// 2026-11-02, a Monday and a multiple of a week since the epoch plus four days: fits (weekly,
/// aligned to the epoch) stay out of the measured minutes.
pub(crate) const T0: i64 = 1_793_577_600_000;

/// Series `i`: eight Kubernetes-like labels, as cAdvisor's CPU series carry.
pub(crate) fn labels(i: usize) -> Labels {
    let pairs = [
        ("__name__", METRIC.to_owned()),
        ("namespace", format!("team-{}", i % 40)),
        ("pod", format!("checkout-7d9f8b6c4-{i:05x}")),
        ("container", "checkout".to_owned()),
        (
            "node",
            format!("ip-10-0-{}-{}.ec2.internal", i % 7, i % 250),
        ),
        ("instance", format!("10.0.{}.{}:10250", i % 7, i % 250)),
        ("job", "kubelet".to_owned()),
        ("service", "checkout".to_owned()),
    ];
    Labels::new(pairs).unwrap_or_default()
}

/// Series `series`' value at `t`: a daily cycle around its own level, with seeded noise.
pub(crate) fn value(series: usize, t: i64) -> f64 {
    let day = std::f64::consts::TAU * (t.rem_euclid(DAY)) as f64 / DAY as f64;
    let level = 50.0 + (series % 97) as f64;
    level + 0.3 * level * day.sin() + 2.0 * gauss((t / MIN) as u64 ^ ((series as u64) << 24))
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
        visit: &mut dyn FnMut(&Labels, &[Sample]),
    ) -> Result<(), NotAPushQuery> {
        match self.0.lock() {
            Ok(mut b) => b.visit_range(q, visit),
            Err(poisoned) => poisoned.into_inner().visit_range(q, visit),
        }
    }
}
