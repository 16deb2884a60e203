//! portent's HTTP side: the scores and self-metrics on `/metrics`, and the control endpoints.
//!
//! * [`Scores`]: the latest [`Scored`](portent_core::Scored) of every series, exposed as
//!   `portent_anomaly_score`, `portent_yhat`, `portent_yhat_lower` and `portent_yhat_upper`
//!   with the input series' labels plus `query` and `model` (clashes: see
//!   [`output_label_name`]), and read back as [`Series`](portent_core::Series) for
//!   remote_write; and each multivariate verdict's features' shares of its score, as
//!   `portent_feature_contribution` with a `feature` label. A table of their own, or read in
//!   place from whoever holds them ([`LatestScores`]: the daemon's model store);
//! * [`SelfMetrics`]: `portent_*` metrics about portent itself;
//! * [`Control`] and [`Reloader`]: readiness, the API token and config reloads shared between
//!   the daemon and the routes;
//! * [`router`], [`control_router`], [`metrics_router`]: axum routers to serve;
//! * [`History`] and [`ui_router`]: the recent verdicts per series (bounded) and the web UI
//!   that draws them, its assets compiled in ([`ui`] lists its pages and JSON).
//!
//! Nothing here is global: the daemon builds one [`Registry`](prometheus_client::registry::Registry),
//! registers the scores and self-metrics in it and hands it to the router.
//!
//! Scraping portent, two things to know:
//!
//! * input series often carry `job` and `instance`, which clash with the labels Prometheus
//!   gives the scrape target; Prometheus then renames the input's to `exported_job` and
//!   `exported_instance`. Scrape portent with `honor_labels: true` (`honorLabels: true` in a
//!   ServiceMonitor) to keep the input's own;
//! * `/metrics` holds each series' latest score until the next one, so scrape at least as
//!   often as the schedules' `score_every` or a short-lived score can go unseen (remote_write
//!   sends every score).
//!
//! ```
//! use std::sync::Arc;
//! use portent_core::{Labels, Scored, Timestamp};
//! use portent_server::{Control, Reloader, ScoreKey, Scores, SelfMetrics, router};
//! use prometheus_client::registry::Registry;
//!
//! let mut registry = Registry::default();
//! let scores = Scores::new();
//! scores.register(&mut registry);
//! let metrics = SelfMetrics::new(&mut registry);
//! let reloader = Reloader::new(metrics.clone(), || async { Ok(()) });
//! let control = Control::new(None, reloader);
//! let app = router(control.clone(), Some(Arc::new(registry)), None);
//!
//! // Each tick: the latest score of each series, then forget the stale ones.
//! let key = ScoreKey::new("cpu".into(), "default".into(), Labels::new([("pod", "a")])?);
//! scores.update([(key, Scored::unknown(Timestamp::from_secs(1_700_000_000), 0.5))]);
//! scores.remove_older_than(Timestamp::from_secs(1_700_000_000 - 86_400));
//! metrics.set_series_tracked(scores.len());
//! control.set_ready(true);
//! # let _ = app;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod explain;
pub mod history;
pub mod incidents;
mod routes;
mod scores;
mod telemetry;
pub mod ui;

pub use explain::Explanations;
pub use history::History;
pub use incidents::{Hub, api_router};
pub use routes::{
    Control, OPENMETRICS_CONTENT_TYPE, ReloadError, Reloader, control_router, metrics_router,
    router,
};
pub use scores::{
    CONTRIBUTION_METRIC, Contributions, FEATURE_LABEL, LatestScores, METRIC_LABEL, MODEL_LABEL,
    OUTPUT_METRICS, QUERY_LABEL, ScoreKey, Scores, Verdicts, output_label_name,
};
pub use telemetry::{PUSH_DROP_REASONS, SelfMetrics};
pub use ui::ui_router;
