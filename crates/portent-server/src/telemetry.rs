//! portent's own metrics (`portent_*`), registered in a registry the daemon passes in.

use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabel {
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScheduleLabel {
    schedule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutputLabel {
    output: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueryLabel {
    query: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// 10 µs to 42 s in factors of 4: one series' score (microseconds) up to a fit of a whole
/// fleet (seconds).
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1e-5, 4.0, 12))
}

/// The self-metrics, as handles: cloning shares them. Every label value is a config alias or
/// a fixed word, so their number is bounded.
///
/// | metric | type | labels |
/// |---|---|---|
/// | `portent_series_tracked` | gauge | |
/// | `portent_fit_duration_seconds` | histogram | `model` |
/// | `portent_score_duration_seconds` | histogram | `model` |
/// | `portent_source_errors_total` | counter | `source` |
/// | `portent_samples_ingested_total` | counter | `source` |
/// | `portent_runs_skipped_total` | counter | `schedule` |
/// | `portent_source_gaps_total` | counter | `query` (score ticks that found nine in ten of the query's series overdue at once: a gap in the source, reported here rather than as missing data) |
/// | `portent_fits_total` | counter | `outcome` (`fitted`: a new series fitted or a series refitted; `kept`: too little history, so the model in use stays and learns online) |
/// | `portent_state_size_bytes` | gauge | |
/// | `portent_config_reloads_total` | counter | `result` (`success`, `failure`) |
/// | `portent_config_last_reload_successful` | gauge | |
/// | `portent_config_last_reload_success_timestamp_seconds` | gauge | |
/// | `portent_push_series` | gauge | |
/// | `portent_push_samples` | gauge | |
/// | `portent_push_samples_dropped_total` | counter | `reason` (`stale`, `out_of_order`, `unmatched`, `buffer_full`) |
/// | `portent_incident_anomalies_total` | counter | |
/// | `portent_incident_anomalies_held_back_total` | counter | |
/// | `portent_remote_write_samples_sent_total` | counter | `output` |
/// | `portent_remote_write_samples_failed_total` | counter | `output` |
/// | `portent_remote_write_samples_dropped_total` | counter | `output` |
#[derive(Clone, Debug)]
pub struct SelfMetrics {
    series_tracked: Gauge,
    fit_duration: HistogramFamily<ModelLabel>,
    score_duration: HistogramFamily<ModelLabel>,
    source_errors: Family<SourceLabel, Counter>,
    samples_ingested: Family<SourceLabel, Counter>,
    runs_skipped: Family<ScheduleLabel, Counter>,
    fits: Family<OutcomeLabel, Counter>,
    source_gaps: Family<QueryLabel, Counter>,
    state_size: Gauge,
    config_reloads: Family<ResultLabel, Counter>,
    last_reload_successful: Gauge,
    last_reload_success_time: Gauge<f64, AtomicU64>,
    push_series: Gauge,
    push_samples: Gauge,
    incident_anomalies: Counter,
    held_back: Counter,
    push_dropped: Family<ReasonLabel, Counter>,
    rw_sent: Family<OutputLabel, Counter>,
    rw_failed: Family<OutputLabel, Counter>,
    rw_dropped: Family<OutputLabel, Counter>,
}

/// Why pushed samples were dropped: the label values of
/// `portent_push_samples_dropped_total`.
pub const PUSH_DROP_REASONS: [&str; 4] = ["stale", "out_of_order", "unmatched", "buffer_full"];

impl SelfMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            series_tracked: Gauge::default(),
            fit_duration: Family::new_with_constructor(duration_histogram),
            score_duration: Family::new_with_constructor(duration_histogram),
            source_errors: Family::default(),
            samples_ingested: Family::default(),
            runs_skipped: Family::default(),
            fits: Family::default(),
            source_gaps: Family::default(),
            state_size: Gauge::default(),
            config_reloads: Family::default(),
            last_reload_successful: Gauge::default(),
            last_reload_success_time: Gauge::default(),
            push_series: Gauge::default(),
            push_samples: Gauge::default(),
            incident_anomalies: Counter::default(),
            held_back: Counter::default(),
            push_dropped: Family::default(),
            rw_sent: Family::default(),
            rw_failed: Family::default(),
            rw_dropped: Family::default(),
        };
        for outcome in ["fitted", "kept"] {
            let _ = m.fits.get_or_create(&OutcomeLabel { outcome });
        }
        for reason in PUSH_DROP_REASONS {
            let _ = m.push_dropped.get_or_create(&ReasonLabel { reason });
        }
        // Before any reload, the config in use is the one loaded at start: a success. Both
        // results start at 0 so that `increase()` sees the first failure.
        m.last_reload_successful.set(1);
        for result in ["success", "failure"] {
            let _ = m.config_reloads.get_or_create(&ResultLabel { result });
        }
        registry.register(
            "portent_series_tracked",
            "Series portent holds state for, over all models",
            m.series_tracked.clone(),
        );
        registry.register_with_unit(
            "portent_fit_duration",
            "Time one fit pass of a model took",
            Unit::Seconds,
            m.fit_duration.clone(),
        );
        registry.register_with_unit(
            "portent_score_duration",
            "Time one scoring pass of a model took",
            Unit::Seconds,
            m.score_duration.clone(),
        );
        registry.register(
            "portent_source_errors",
            "Failed reads from a source (pull: a query that failed after its retries; push: a \
             rejected remote_write request)",
            m.source_errors.clone(),
        );
        registry.register(
            "portent_samples_ingested",
            "Samples taken in from a source",
            m.samples_ingested.clone(),
        );
        registry.register(
            "portent_runs_skipped",
            "Scheduled runs skipped because the previous one was still going",
            m.runs_skipped.clone(),
        );
        registry.register(
            "portent_fits",
            "Model fits: new series fitted and series refitted (fitted), and fits given too \
             little history, where the model in use stays and learns online (kept; in push \
             mode, a push buffer too small for the fit window)",
            m.fits.clone(),
        );
        registry.register(
            "portent_source_gaps",
            "Score ticks that found nine in ten of a query's series (of at least ten) overdue \
             at once: a gap in the source (remote_write stopped, a stalled pipeline), reported \
             here instead of as missing data for each series",
            m.source_gaps.clone(),
        );
        registry.register_with_unit(
            "portent_state_size",
            "Size of the persisted model state",
            Unit::Bytes,
            m.state_size.clone(),
        );
        registry.register(
            "portent_config_reloads",
            "Config reloads (SIGHUP or POST /-/reload), by result",
            m.config_reloads.clone(),
        );
        registry.register(
            "portent_config_last_reload_successful",
            "Whether the last config reload succeeded (1) or failed and the previous config \
             is still in use (0)",
            m.last_reload_successful.clone(),
        );
        registry.register_with_unit(
            "portent_config_last_reload_success_timestamp",
            "When the config was last loaded successfully, in seconds since the epoch",
            Unit::Seconds,
            m.last_reload_success_time.clone(),
        );
        registry.register(
            "portent_push_series",
            "Series held in the push buffer (pushed by remote_write and selected by a push query)",
            m.push_series.clone(),
        );
        registry.register(
            "portent_push_samples",
            "Samples held in the push buffer, over all series (about 8 bytes each for noisy values)",
            m.push_samples.clone(),
        );
        registry.register(
            "portent_incident_anomalies",
            "Scored samples at or above their threshold taken into incidents",
            m.incident_anomalies.clone(),
        );
        registry.register(
            "portent_incident_anomalies_held_back",
            "Scored samples at or above their model's threshold held back by feedback: below \
             the series' raised threshold, or a pattern marked a false positive",
            m.held_back.clone(),
        );
        registry.register(
            "portent_push_samples_dropped",
            "Pushed samples not kept, by reason: stale markers, out of order or duplicate, of \
             a series no push query selects, or the buffer full (source.push.max_samples)",
            m.push_dropped.clone(),
        );
        registry.register(
            "portent_remote_write_samples_sent",
            "Score samples a remote_write output delivered",
            m.rw_sent.clone(),
        );
        registry.register(
            "portent_remote_write_samples_failed",
            "Score samples a remote_write output gave up on after its retries",
            m.rw_failed.clone(),
        );
        registry.register(
            "portent_remote_write_samples_dropped",
            "Score samples dropped unsent because a remote_write output's queue was full",
            m.rw_dropped.clone(),
        );
        m
    }

    /// Sets the size of the push buffer.
    pub fn set_push_buffer(&self, series: usize, samples: usize) {
        self.push_series
            .set(i64::try_from(series).unwrap_or(i64::MAX));
        self.push_samples
            .set(i64::try_from(samples).unwrap_or(i64::MAX));
    }

    /// Counts one step's fits: `fitted` models fitted or refitted, `kept` refits that kept the
    /// model in use for want of history.
    pub fn add_fits(&self, fitted: u64, kept: u64) {
        self.fits
            .get_or_create(&OutcomeLabel { outcome: "fitted" })
            .inc_by(fitted);
        self.fits
            .get_or_create(&OutcomeLabel { outcome: "kept" })
            .inc_by(kept);
    }

    /// Counts a score tick of query `query` that found the source silent (see
    /// `portent_source_gaps_total`).
    pub fn inc_source_gap(&self, query: &str) {
        self.source_gaps
            .get_or_create(&QueryLabel {
                query: query.to_owned(),
            })
            .inc();
    }

    /// Counts what one step gave the incidents: samples taken in, samples held back.
    pub fn add_incident_anomalies(&self, taken: u64, held_back: u64) {
        self.incident_anomalies.inc_by(taken);
        self.held_back.inc_by(held_back);
    }

    /// Counts `n` pushed samples dropped for `reason` (one of [`PUSH_DROP_REASONS`]).
    pub fn add_push_dropped(&self, reason: &'static str, n: u64) {
        self.push_dropped
            .get_or_create(&ReasonLabel { reason })
            .inc_by(n);
    }

    /// Counts score samples remote_write output `output` sent.
    pub fn add_remote_write_sent(&self, output: &str, n: u64) {
        self.rw_sent
            .get_or_create(&OutputLabel {
                output: output.to_owned(),
            })
            .inc_by(n);
    }

    /// Counts score samples remote_write output `output` failed to send.
    pub fn add_remote_write_failed(&self, output: &str, n: u64) {
        self.rw_failed
            .get_or_create(&OutputLabel {
                output: output.to_owned(),
            })
            .inc_by(n);
    }

    /// Counts score samples remote_write output `output` dropped from its full queue.
    pub fn add_remote_write_dropped(&self, output: &str, n: u64) {
        self.rw_dropped
            .get_or_create(&OutputLabel {
                output: output.to_owned(),
            })
            .inc_by(n);
    }

    /// Makes the remote_write counters of `output` appear at 0 before anything is sent.
    pub fn init_remote_write(&self, output: &str) {
        self.add_remote_write_sent(output, 0);
        self.add_remote_write_failed(output, 0);
        self.add_remote_write_dropped(output, 0);
    }

    /// Sets how many series portent holds state for.
    pub fn set_series_tracked(&self, n: usize) {
        self.series_tracked
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Records one fit pass of `model`.
    pub fn observe_fit(&self, model: &str, took: Duration) {
        self.fit_duration
            .get_or_create(&ModelLabel {
                model: model.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// Records one scoring pass of `model`.
    pub fn observe_score(&self, model: &str, took: Duration) {
        self.score_duration
            .get_or_create(&ModelLabel {
                model: model.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// Counts a failed read from `source` (`pull`, `push` or another fixed name).
    pub fn inc_source_errors(&self, source: &str) {
        self.source_errors
            .get_or_create(&SourceLabel {
                source: source.to_owned(),
            })
            .inc();
    }

    /// Counts `n` samples taken in from `source`.
    pub fn add_samples_ingested(&self, source: &str, n: u64) {
        self.samples_ingested
            .get_or_create(&SourceLabel {
                source: source.to_owned(),
            })
            .inc_by(n);
    }

    /// Counts a skipped run of `schedule`.
    pub fn inc_runs_skipped(&self, schedule: &str) {
        self.runs_skipped
            .get_or_create(&ScheduleLabel {
                schedule: schedule.to_owned(),
            })
            .inc();
    }

    /// Sets the size of the persisted state.
    pub fn set_state_size(&self, bytes: u64) {
        self.state_size
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Records the start-up load of the config (a success at `at`, not counted as a reload).
    pub fn record_initial_load(&self, at: SystemTime) {
        self.last_reload_successful.set(1);
        self.last_reload_success_time.set(epoch_secs(at));
    }

    /// Records a reload attempt that finished at `at`.
    pub fn record_reload(&self, success: bool, at: SystemTime) {
        let result = if success { "success" } else { "failure" };
        self.config_reloads
            .get_or_create(&ResultLabel { result })
            .inc();
        self.last_reload_successful.set(i64::from(success));
        if success {
            self.last_reload_success_time.set(epoch_secs(at));
        }
    }
}

fn epoch_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
