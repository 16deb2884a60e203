//! `portent rules`: Prometheus alerting rules on portent's scores, as a rule file or a
//! prometheus-operator `PrometheusRule`.
//!
//! # Why `max_over_time`, not `portent_anomaly_score > 0.8 for 5m`
//!
//! The score is onset-shaped: it is high when a series leaves what portent learnt as normal
//! and again when the departure worsens, not on every sample while an incident lasts (the
//! models adapt, and a level that has been wrong for an hour is no longer news to them). The
//! plain rule would need five minutes of consecutive high scores and so would miss most real
//! incidents. Each rule instead asks whether the score reached the model's threshold at any
//! time in the last `--window` (15m):
//!
//! ```text
//! max_over_time(portent_anomaly_score{model="M",query="Q"}[15m]) >= THRESHOLD
//! ```
//!
//! * one score at the onset is enough: the expression stays true for the whole window after
//!   it, so with `for` shorter than the window the alert fires `for` after the onset (5m by
//!   default: a pending phase in which the first minutes of an incident gather, and the delay
//!   the plain rule had). `for` at least the window could let a lone onset go unreported, so
//!   it is refused;
//! * the alert keeps firing until a window has passed without a high score, so a score that
//!   peaks again as the incident worsens keeps one alert going instead of a flapping series;
//! * the exposition holds each score until the next one, so a Prometheus that scrapes portent
//!   at least as often as the schedule's `score_every` sees every score.
//!
//! # portent's own health
//!
//! A detector that stopped seeing its input says nothing, which looks like all is well. A last
//! group, `portent-self`, alerts on portent's self-metrics (`--no-self-alerts` leaves it out):
//! a query whose series all went quiet at once (`portent_source_gaps_total`), a source that
//! keeps failing (`portent_source_errors_total`), and a push buffer that refuses samples
//! (`portent_push_samples_dropped_total{reason="buffer_full"}`). Each must persist for
//! [`SELF_FOR`], so that a Prometheus restart or one failed read does not page anyone.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use portent_config::{Config, ModelKind, format_duration, parse_duration};
use serde::{Deserialize, Serialize};

/// Options of `portent rules`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The YAML config file; each of its models gets one alert per query it scores.
    config: PathBuf,
    /// `prometheus`: a rule file (`rule_files:` in prometheus.yml, `promtool check rules`);
    /// `kubernetes`: a prometheus-operator PrometheusRule manifest with the same groups.
    #[arg(long, value_enum, default_value_t = Format::Prometheus)]
    format: Format,
    /// Write here instead of standard output.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
    /// How long a score at the threshold keeps the alert's condition true.
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    window: Duration,
    /// How long the condition must hold before the alert fires; shorter than --window.
    #[arg(long = "for", default_value = "5m", value_parser = parse_duration)]
    for_: Duration,
    /// The `severity` label of the alerts.
    #[arg(long, default_value = "warning")]
    severity: String,
    /// `metadata.name` of the PrometheusRule (kubernetes format only).
    #[arg(long, default_value = "portent")]
    name: String,
    /// Leave out the `portent-self` group, which alerts on portent's own health.
    #[arg(long)]
    no_self_alerts: bool,
}

/// What `portent rules` writes.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    /// A Prometheus rule file.
    Prometheus,
    /// A prometheus-operator PrometheusRule.
    Kubernetes,
}

/// A Prometheus rule file: `groups:` at the top.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RuleFile {
    pub(crate) groups: Vec<RuleGroup>,
}

/// One rule group: evaluated together, at Prometheus' global evaluation interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RuleGroup {
    pub(crate) name: String,
    pub(crate) rules: Vec<AlertRule>,
}

/// One alerting rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct AlertRule {
    pub(crate) alert: String,
    pub(crate) expr: String,
    #[serde(rename = "for")]
    pub(crate) for_: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) annotations: BTreeMap<String, String>,
}

/// A prometheus-operator `PrometheusRule` (monitoring.coreos.com/v1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PrometheusRule {
    #[serde(rename = "apiVersion")]
    api_version: String,
    kind: String,
    metadata: Metadata,
    spec: RuleFile,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Metadata {
    name: String,
    labels: BTreeMap<String, String>,
}

/// The alert every rule raises; the `query` and `model` labels tell them apart.
const ALERT_NAME: &str = "PortentAnomaly";

/// How long a self-alert's condition must hold: gaps and errors are counted per tick or per
/// read, and one of them (a Prometheus restarting, a read timing out) is not worth a page.
const SELF_FOR: &str = "10m";

/// The input series' own labels, for annotations: every label but those portent and the rule
/// add.
const SERIES_LABELS: &str = "{{ range $k, $v := $labels }}{{ if and (ne $k \"query\") \
    (ne $k \"model\") (ne $k \"alertname\") (ne $k \"severity\") }}{{ $k }}=\"{{ $v }}\" \
    {{ end }}{{ end }}";

/// Loads the config, builds the rules and writes them.
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    if args.for_ >= args.window {
        bail!(
            "--for {} must be shorter than --window {}: the condition holds for one window \
             after a high score, so a lone onset would never fire",
            format_duration(args.for_),
            format_duration(args.window)
        );
    }
    let config = Config::load(&args.config)?;
    let source = args.config.display().to_string();
    let rules = rule_file(&config, args);
    let text = match args.format {
        Format::Prometheus => render(&source, args, &rules)?,
        Format::Kubernetes => {
            let manifest = PrometheusRule {
                api_version: "monitoring.coreos.com/v1".into(),
                kind: "PrometheusRule".into(),
                metadata: Metadata {
                    name: args.name.clone(),
                    labels: BTreeMap::from([(
                        "app.kubernetes.io/name".to_owned(),
                        "portent".to_owned(),
                    )]),
                },
                spec: rules,
            };
            render(&source, args, &manifest)?
        }
    };
    match &args.output {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?
        }
        None => print!("{text}"),
    }
    Ok(())
}

/// One group per model, one rule per query it scores, in the config's order of aliases.
pub(crate) fn rule_file(config: &Config, args: &Args) -> RuleFile {
    let window = format_duration(args.window);
    let for_ = format_duration(args.for_);
    let mut groups = config
        .models
        .iter()
        .map(|(model, m)| {
            let threshold = m.threshold().get();
            // What each rule watches: a univariate model's verdicts carry the query they
            // score; a multivariate model's carry its own alias as `query`, one per entity.
            let watched: Vec<(String, String, String)> = match &m.kind {
                ModelKind::Auto(_) => config
                    .queries_of(m)
                    .map(|(query, q)| {
                        let expr = q.expr.split_whitespace().collect::<Vec<_>>().join(" ");
                        let summary = format!("Anomalous {query} (model {model}): {SERIES_LABELS}");
                        let description = format!(
                            "portent scored the result series of query {query} ({expr}) at \
                             {{{{ $value | printf \"%.2f\" }}}} within the last {window}, at \
                             or above the threshold {threshold} of model {model}: it departs \
                             from what portent learnt as normal for it. The score is high at \
                             the onset of an anomaly and when it worsens, so this alert keeps \
                             firing until {window} pass without a high score. Compare the \
                             series with portent_yhat_lower and portent_yhat_upper (its \
                             expected band)."
                        );
                        (query.to_string(), summary, description)
                    })
                    .collect(),
                ModelKind::Joint(j) => {
                    let features = aliases_of(m);
                    let summary = format!(
                        "Unusual combination of {features} (model {model}): {SERIES_LABELS}"
                    );
                    let description = format!(
                        "portent's {method} model {model} scored the row of queries \
                         {features} joined on {join} at {{{{ $value | printf \"%.2f\" }}}} \
                         within the last {window}, at or above its threshold {threshold}: \
                         together the values depart from what portent learnt as normal for \
                         this entity, even where each is within its usual range. The score \
                         also rises with the univariate scores of the same queries.",
                        method = j.method.as_str(),
                        join = j.join_on.join(", "),
                    );
                    vec![(model.to_string(), summary, description)]
                }
            };
            let rules = watched
                .into_iter()
                .map(|(query, summary, description)| {
                    let expr = format!(
                        "max_over_time(portent_anomaly_score{{model=\"{model}\",query=\"{query}\"}}\
                         [{window}]) >= {threshold}"
                    );
                    AlertRule {
                        alert: ALERT_NAME.to_owned(),
                        expr,
                        for_: for_.clone(),
                        // The series carry `query` and `model` already; as rule labels too
                        // they tell the rules apart for `promtool check rules`' duplicate
                        // lint and for whoever reads the rule list.
                        labels: BTreeMap::from([
                            ("severity".to_owned(), args.severity.clone()),
                            ("query".to_owned(), query.to_string()),
                            ("model".to_owned(), model.to_string()),
                        ]),
                        annotations: BTreeMap::from([
                            ("summary".to_owned(), summary),
                            ("description".to_owned(), description),
                        ]),
                    }
                })
                .collect();
            RuleGroup {
                name: format!("portent-{model}"),
                rules,
            }
        })
        .collect::<Vec<_>>();
    if !args.no_self_alerts {
        groups.push(self_alerts(&args.severity));
    }
    RuleFile { groups }
}

/// The `portent-self` group: alerts on portent's own health (see the module docs).
fn self_alerts(severity: &str) -> RuleGroup {
    let rule = |alert: &str, expr: &str, summary: &str, description: &str| AlertRule {
        alert: alert.to_owned(),
        expr: expr.to_owned(),
        for_: SELF_FOR.to_owned(),
        labels: BTreeMap::from([("severity".to_owned(), severity.to_owned())]),
        annotations: BTreeMap::from([
            ("summary".to_owned(), summary.to_owned()),
            ("description".to_owned(), description.to_owned()),
        ]),
    };
    RuleGroup {
        name: "portent-self".to_owned(),
        rules: vec![
            rule(
                "PortentSourceGap",
                "increase(portent_source_gaps_total[5m]) > 0",
                "portent gets no samples for query {{ $labels.query }}",
                "Nine in ten or more of the series of query {{ $labels.query }} stopped \
                 arriving at once, tick after tick, for 10 minutes. portent reports this as a \
                 gap in its source, not as missing data on each series, and cannot score what \
                 it does not receive: check the Prometheus that remote_writes to portent (its \
                 queue, prometheus_remote_storage_* metrics) or the query's exporters.",
            ),
            rule(
                "PortentSourceErrors",
                "increase(portent_source_errors_total[5m]) > 0",
                "portent's {{ $labels.source }} source keeps failing",
                "portent's {{ $labels.source }} source kept failing for 10 minutes (pull: its \
                 queries to Prometheus; push: remote_write requests it refused as malformed or \
                 too large), so series are scored late or not at all. portent's log names each \
                 failure: check that Prometheus is up and reachable and the credentials, or \
                 what the sender writes.",
            ),
            rule(
                "PortentPushBufferFull",
                "increase(portent_push_samples_dropped_total{reason=\"buffer_full\"}[5m]) > 0",
                "portent's push buffer refuses samples",
                "For 10 minutes portent's push buffer was full and dropped samples \
                 (portent_push_samples_dropped_total{reason=\"buffer_full\"}): new series \
                 are refused and go unscored. Raise source.push.max_samples (memory: about 8 \
                 bytes a sample), narrow the push queries, or shard portent.",
            ),
        ],
    }
}

/// `a, b and c`: a model's query aliases.
fn aliases_of(m: &portent_config::Model) -> String {
    let names: Vec<&str> = m.queries.iter().map(|a| a.as_str()).collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => names.join(""),
    }
}

/// The YAML with a header that says where it came from and how its rules work.
fn render(source: &str, args: &Args, value: &impl Serialize) -> anyhow::Result<String> {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "# Generated by `portent rules {source}`; regenerate rather than edit.\n\
         #\n\
         # Each rule fires when a model's anomaly score for a query reached the model's\n\
         # threshold at any time in the last {window}, held for {for_}. The score is high\n\
         # at the onset of an anomaly and when it worsens, not throughout, so the rules\n\
         # look back over a window instead of requiring the score to stay high. The last\n\
         # group, portent-self, alerts on portent's own health (--no-self-alerts omits it).",
        window = format_duration(args.window),
        for_ = format_duration(args.for_),
    );
    // Plain or quoted scalars only: no folded blocks whose whitespace a reader could
    // reinterpret.
    let options = serde_saphyr::ser_options! { prefer_block_scalars: false };
    text.push_str(
        &serde_saphyr::to_string_with_options(value, options)
            .context("writing the rules as YAML")?,
    );
    Ok(text)
}
