//! Every default of the configuration, in one place.
//!
//! The README's key reference quotes these values; `readme_quotes_the_defaults` in this crate's
//! tests keeps the two in step.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use portent_core::{Direction, Score};

/// `server.listen`: the web UI, JSON API, `/metrics` and the remote_write receiver.
///
/// Loopback, so that a first run exposes nothing; containers set `0.0.0.0:9099`. Port 9099 is
/// next to node-exporter's 9100 and clear of Prometheus (9090), Pushgateway (9091) and
/// Alertmanager (9093/9094).
pub const LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9099);

/// `queries.*.step`: the resolution at which a query is read.
pub const QUERY_STEP: Duration = Duration::from_secs(60);

/// `models.*.type`: portent's default univariate detector.
pub const MODEL_TYPE: &str = "auto";
/// `models.*.direction`.
pub const DIRECTION: Direction = Direction::Both;
/// `models.*.min_abs_deviation`: no floor.
pub const MIN_ABS_DEVIATION: f64 = 0.0;
/// `models.*.min_rel_deviation`: no floor.
pub const MIN_REL_DEVIATION: f64 = 0.0;
/// `models.*.threshold`: the documented alerting threshold of `portent_anomaly_score`.
pub const THRESHOLD: Score = Score::ALERT;
/// `models.*.join_on` of `isolation_forest` and `autoencoder` models: one row per pod.
pub const JOIN_ON: [&str; 2] = ["namespace", "pod"];
/// The alias of the model used when the config has no `models` section.
pub const MODEL_ALIAS: &str = "default";

/// `schedules.*.fit_every`: daily, as the detector's own refit policy (`RefitPolicy`) and every
/// measurement of it (NAB, calibration) assume. Between fits the online level and scale adapt;
/// an hourly refit of a million series would also read two weeks of history for each of them
/// from Prometheus every hour.
pub const FIT_EVERY: Duration = Duration::from_secs(86_400);
/// `schedules.*.fit_window`: four weeks, as `RefitPolicy`: a weekly cycle is a candidate from
/// two weeks of history, and per-hour-of-week ranges are kept from three.
pub const FIT_WINDOW: Duration = Duration::from_secs(28 * 86_400);
/// `schedules.*.score_every`.
pub const SCORE_EVERY: Duration = Duration::from_secs(60);
/// The alias of the schedule used when the config has no `schedules` section.
pub const SCHEDULE_ALIAS: &str = "default";

/// The alias of the output used when the config has no `outputs` section: `/metrics`.
pub const OUTPUT_ALIAS: &str = "metrics";

/// `*.timeout` of HTTP endpoints (pull source, remote_write outputs).
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// `*.retries.max`: attempts after the first.
pub const RETRIES_MAX: u32 = 3;
/// `*.retries.initial_backoff`.
pub const RETRIES_INITIAL_BACKOFF: Duration = Duration::from_millis(500);
/// `*.retries.max_backoff`.
pub const RETRIES_MAX_BACKOFF: Duration = Duration::from_secs(30);
/// `*.tls.insecure_skip_verify`: certificates are verified.
pub const INSECURE_SKIP_VERIFY: bool = false;

/// `source.pull.max_points_per_series`: Prometheus' `query_range` limit; longer ranges are
/// split into chunks. VictoriaMetrics allows 30,000.
pub const MAX_POINTS_PER_SERIES: u32 = 11_000;

/// `source.push.max_body_size`: the largest remote_write request accepted, in bytes
/// (compressed, as on the wire). Prometheus sends at most a few MiB per request.
pub const MAX_BODY_SIZE: u64 = 32 * 1024 * 1024;

/// `source.push.max_samples_per_series`: three days at the default 1 m step (a warm-up and
/// daily refits see three daily cycles), about 35 KiB per series when full for noisy values
/// (the push buffer packs older samples to about 8 bytes, from 16).
pub const PUSH_MAX_SAMPLES_PER_SERIES: u32 = 4_320;

/// `source.push.max_samples`: 16 Mi samples, 256 MiB of samples over all pushed series (plus
/// their label sets): a full three days for 3,800 series, or a day for 11,600.
pub const PUSH_MAX_SAMPLES: u64 = 16 * 1024 * 1024;

/// `source.push.lateness`: Prometheus sends every 5 s, and later while it retries; a sample
/// that arrives up to five minutes after the score tick that covered its time is still scored.
pub const PUSH_LATENESS: Duration = Duration::from_secs(300);

/// `storage.dir`, relative to the config file's directory.
pub const STORAGE_DIR: &str = "data";
/// `storage.series_retention`: a series unseen this long is dropped with its state.
pub const SERIES_RETENTION: Duration = Duration::from_secs(86_400);

/// `incidents.enabled`: anomalies are grouped into incidents (served at `/api/v1/incidents`)
/// unless turned off.
pub const INCIDENTS_ENABLED: bool = true;
/// `incidents.hold`: how long an incident stays anomalous before it fires (and notifies), as a
/// Prometheus rule's `for`.
pub const INCIDENT_HOLD: Duration = Duration::from_secs(120);
/// `incidents.gap`: the longest quiet stretch that still counts as overlapping in time.
pub const INCIDENT_GAP: Duration = Duration::from_secs(600);
/// `incidents.resolve_after`: how long without anomalies before an incident resolves.
pub const INCIDENT_RESOLVE_AFTER: Duration = Duration::from_secs(600);
/// `incidents.sustain`: how long after an incident started members still beyond their
/// pre-incident band keep it open (a leak, errors that stay up after a bad rollout). Four
/// hours: the band's edge is fixed while a seasonal series moves on, so a longer hold keeps
/// an incident open on the daily cycle alone; at 6 h and more, a crashloop and a noisy
/// neighbour six hours apart became one incident on half the simulator's seeds (1 h to 4 h
/// all gave the same results; BENCHMARKS.md).
pub const INCIDENT_SUSTAIN: Duration = Duration::from_secs(4 * 3600);
/// `incidents.reopen_within`: how long after resolving an incident is reopened by another
/// anomaly of one of its series (a flapping series is one incident, not one per flap); within
/// twice `incidents.gap` of resolving, by an anomaly of the same pod, workload or service. Three
/// hours: a slow problem that the detectors adapt to is flagged again hours apart (a latency
/// creep on the simulator: twice, 1 h 48 min apart).
pub const INCIDENT_REOPEN_WITHIN: Duration = Duration::from_secs(3 * 3600);
/// `incidents.retention`: how long a resolved incident is kept (and served).
pub const INCIDENT_RETENTION: Duration = Duration::from_secs(86_400);
/// `incidents.max_open`: the most open incidents; further anomalies are counted and dropped.
pub const INCIDENT_MAX_OPEN: usize = 1000;
/// `incidents.max_series`: the most series in one incident.
pub const INCIDENT_MAX_SERIES: usize = 200;
/// `incidents.group_by_namespace`: anomalies sharing only a namespace belong together.
pub const INCIDENT_GROUP_BY_NAMESPACE: bool = true;
/// `incidents.labels.*`: the label keys that carry topology (Kubernetes and
/// kube-state-metrics names).
pub const TOPOLOGY_LABELS: [(&str, &str); 5] = [
    ("namespace", "namespace"),
    ("service", "service"),
    ("deployment", "deployment"),
    ("pod", "pod"),
    ("node", "node"),
];
/// `incidents.silences_every`: how often Alertmanager silences are read as feedback.
pub const SILENCES_EVERY: Duration = Duration::from_secs(60);
/// `incidents.notify.alertmanager[].resend_every`: how often a firing alert is re-posted, as
/// Prometheus does (`endsAt` is 4 times this ahead).
pub const ALERTMANAGER_RESEND_EVERY: Duration = Duration::from_secs(60);

/// `explain.pseudonymize`: names leave portent as they are unless turned on.
pub const PSEUDONYMIZE: bool = false;
/// `explain.kubernetes_events`: off unless portent runs with a service account that may list
/// events.
pub const KUBERNETES_EVENTS: bool = false;
/// `explain.actions.live`: runbook actions are dry-run (recorded, not sent) unless turned on.
pub const ACTIONS_LIVE: bool = false;
/// `explain.llm.url` for `provider: anthropic`.
pub const ANTHROPIC_URL: &str = "https://api.anthropic.com";
/// `explain.llm.url` for `provider: openai`.
pub const OPENAI_URL: &str = "https://api.openai.com";
/// `explain.llm.max_tokens`: the most output tokens per call.
pub const LLM_MAX_TOKENS: u32 = 1024;
/// `explain.llm.timeout`: per HTTP attempt.
pub const LLM_TIMEOUT: Duration = Duration::from_secs(60);
/// `explain.llm.max_tokens_per_incident`: input plus output tokens over every call for one
/// incident.
pub const LLM_MAX_TOKENS_PER_INCIDENT: u64 = 40_000;
/// `explain.llm.max_cost_per_incident`: US dollars, enforced when prices are set.
pub const LLM_MAX_COST_PER_INCIDENT: f64 = 0.25;
