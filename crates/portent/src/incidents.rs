//! Incidents in `portent serve`: the config's `incidents` section turned into a
//! [`Hub`] the scoring loop feeds, a notifier task that delivers each
//! state change to Alertmanager, Slack and webhooks, and Alertmanager silences read back as
//! feedback.
//!
//! Per step the loop hands every verdict to [`Incidents::observe`]; the hub keeps those at or
//! above their model's threshold (plus feedback). Every [`NOTIFY_EVERY`] the notifier builds
//! the evidence packs, has them explained in the background ([`crate::explain`]: runbooks,
//! events, logs, the LLM) and ticks [`Notifier`] with the explanations, which sends each state
//! change once per sink and retries failures with backoff. False positives' windows are kept out of every read the
//! scheduler makes ([`Excluding`]), so fits and warm-ups never learn from them.
//!
//! Incidents live in memory: after a restart they open again from the anomalies that follow.
//! Feedback is in `storage.dir/feedback.json` and survives.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use portent_config::Config;
use portent_core::{Labels, Sample, Score, Series};
use portent_engine::{Hint, HistorySource, RangeQuery, Request, StepScore};
use portent_incidents::feedback::{FeedbackStore, SeriesWindow, ThresholdRule};
use portent_incidents::notify::{
    AlertmanagerConfig, Notifier, NotifierConfig, Sink, SlackConfig, WebhookConfig,
};
use portent_incidents::{Anomaly, CorrelatorConfig, PackConfig, TopologyConfig};
use portent_server::Hub;
use portent_server::incidents::Candidate;
use tokio::sync::watch;

/// How often packs are built and the notifier ticked.
pub(crate) const NOTIFY_EVERY: Duration = Duration::from_secs(2);

/// The feedback file in `storage.dir`.
pub(crate) const FEEDBACK_FILE: &str = "feedback.json";

/// Incidents as the daemon runs them.
pub(crate) struct Incidents {
    pub(crate) hub: Hub,
    /// Each model's alerting threshold, by alias.
    thresholds: HashMap<String, Score>,
    /// The `explain` section the explainer was built from (it is not rebuilt on reload).
    explain: portent_config::Explain,
}

fn correlator_config(config: &Config) -> CorrelatorConfig {
    let i = &config.incidents;
    CorrelatorConfig {
        topology: TopologyConfig {
            namespace: i.labels.namespace.clone(),
            service: i.labels.service.clone(),
            deployment: i.labels.deployment.clone(),
            pod: i.labels.pod.clone(),
            node: i.labels.node.clone(),
            group_by_namespace: i.group_by_namespace,
            ..TopologyConfig::default()
        },
        // The hub applies each model's own threshold before the correlator sees a sample.
        min_score: Score::ZERO,
        gap: i.gap,
        hold: i.hold,
        resolve_after: i.resolve_after,
        sustain: i.sustain,
        reopen_within: i.reopen_within,
        retention: i.retention,
        max_open: i.max_open,
        max_members: i.max_series,
        ..CorrelatorConfig::default()
    }
}

/// Where links in notifications point: `incidents.external_url`, else `server.listen`.
fn base_url(config: &Config) -> String {
    match &config.incidents.external_url {
        Some(u) => u.as_str().trim_end_matches('/').to_owned(),
        None => format!("http://{}", config.server.listen),
    }
}

/// The sinks of `config.incidents.notify`, Alertmanagers first.
fn sinks(config: &Config) -> Vec<Sink> {
    let base = base_url(config);
    let mut sinks = Vec::new();
    for a in &config.incidents.alertmanager {
        let mut c = AlertmanagerConfig::new(a.url.as_str().trim_end_matches('/'));
        c.labels = a.labels.clone();
        c.runbook_url = a.runbook_url.clone();
        c.generator_url = Some(format!("{base}/api/v1/incidents/{{incident}}"));
        c.resend_every = a.resend_every;
        c.headers = a
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        c.bearer = a.bearer_token.as_ref().map(|s| s.expose().to_owned());
        sinks.push(Sink::Alertmanager(c));
    }
    for s in &config.incidents.slack {
        sinks.push(Sink::Slack(SlackConfig {
            url: s.webhook_url.expose().to_owned(),
            chart_base_url: None,
        }));
    }
    for w in &config.incidents.webhook {
        let mut c = WebhookConfig::new(w.url.as_str());
        c.headers = w
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        c.bearer = w.bearer_token.as_ref().map(|s| s.expose().to_owned());
        sinks.push(Sink::Webhook(c));
    }
    sinks
}

fn thresholds(config: &Config) -> HashMap<String, Score> {
    config
        .models
        .iter()
        .map(|(alias, m)| (alias.to_string(), m.threshold()))
        .collect()
}

impl Incidents {
    /// The hub for `config`, or `None` when `incidents.enabled` is false. Opens the feedback
    /// file in `storage.dir` (missing: no feedback yet; corrupt: an error, never replaced).
    pub(crate) fn new(config: &Config) -> Result<Option<Self>> {
        if !config.incidents.enabled {
            return Ok(None);
        }
        let dir = &config.storage.dir;
        let store = FeedbackStore::open(dir.join(FEEDBACK_FILE), ThresholdRule::default())?;
        let hub = Hub::new(correlator_config(config), store, PackConfig::default())
            .with_explanations(crate::explain::explanations(config)?);
        Ok(Some(Self {
            hub,
            thresholds: thresholds(config),
            explain: config.explain.clone(),
        }))
    }

    /// Takes a reloaded config's model thresholds (the rest of `incidents`, and `explain`,
    /// need a restart: the explainer holds the LLM's budgets and cache, which a rebuild would
    /// reset).
    pub(crate) fn reload(&mut self, config: &Config) {
        self.thresholds = thresholds(config);
        if config.explain != self.explain {
            eprintln!("portent: warning: explain changed: restart to apply");
        }
    }

    /// Offers one step's verdicts to the hub: [`Incidents::offer`], [`Incidents::take`] and
    /// [`Incidents::close`] at once.
    pub(crate) fn observe(
        &self,
        scores: &[StepScore],
        now: portent_core::Timestamp,
    ) -> portent_server::incidents::Observed {
        let mut offer = self.offer();
        self.take(&mut offer, scores);
        self.close(offer, now)
    }

    /// Starts offering one step's verdicts, which [`Incidents::take`] then reads a part at a
    /// time, so that the daemon never holds a whole tick of them.
    pub(crate) fn offer(&self) -> Offer {
        // Learning where pods run opens no incident: the members of the open incidents are
        // the same before the step's verdicts as after.
        Offer {
            members: self.hub.open_members(),
            candidates: Vec::new(),
        }
    }

    /// Learns from `scores` and keeps those the hub is to judge: the verdicts at or over
    /// their threshold, and any of a member of an open incident.
    pub(crate) fn take(&self, offer: &mut Offer, scores: &[StepScore]) {
        // A series' pod is placed on its first verdict, then refreshed now and then: its
        // labels, and so its placement, never change.
        self.hub.learn(scores.iter().map(|s| {
            let place = s.first || portent_incidents::place_due(&s.labels, s.scored.t);
            (&s.labels, &*s.query, s.scored.t, s.scored.value, place)
        }));
        // Verdicts below their threshold only of the members of open incidents: one still
        // beyond its pre-incident band keeps its incident active.
        let members = &offer.members;
        // Verdicts come a model's series after another: its threshold is looked up once a
        // run, not hashed from its alias for each verdict.
        let mut last: Option<(&Arc<str>, Option<Score>)> = None;
        let candidates = scores.iter().filter_map(|s| {
            let threshold = match last {
                Some((model, t)) if Arc::ptr_eq(model, &s.model) => t,
                _ => {
                    let t = self.thresholds.get(&*s.model).copied();
                    last = Some((&s.model, t));
                    t
                }
            }?;
            let member = || {
                members
                    .as_ref()
                    .is_some_and(|m| m.contains(&s.labels, &s.query, &s.model))
            };
            (s.scored.score >= threshold || member()).then(|| Candidate {
                anomaly: Anomaly {
                    labels: s.labels.clone(),
                    query: s.query.to_string(),
                    model: s.model.to_string(),
                    scored: s.scored,
                },
                threshold,
            })
        });
        offer.candidates.extend(candidates);
    }

    /// Hands the step's candidates to the hub, at the step's clock.
    pub(crate) fn close(
        &self,
        offer: Offer,
        now: portent_core::Timestamp,
    ) -> portent_server::incidents::Observed {
        self.hub.observe(offer.candidates, now)
    }
}

/// One step's verdicts on their way to the hub (see [`Incidents::offer`]).
pub(crate) struct Offer {
    members: Option<portent_incidents::OpenMembers>,
    candidates: Vec<Candidate>,
}

/// Runs the notifier until `stop`: every [`NOTIFY_EVERY`] the packs are explained
/// ([`crate::explain`]) and sent, and every `incidents.silences_every` the Alertmanagers'
/// silences are read as feedback. Without sinks, incidents are still explained for the API.
pub(crate) async fn notify(config: Arc<Config>, hub: Hub, mut stop: watch::Receiver<bool>) {
    let sinks = sinks(&config);
    let mut notifier = if sinks.is_empty() {
        None
    } else {
        match Notifier::new(sinks, NotifierConfig::default()) {
            Ok(n) => Some(n),
            Err(e) => {
                eprintln!("portent: incidents will not be sent: {e}");
                None
            }
        }
    };
    let silence_sources: Vec<AlertmanagerConfig> = notifier
        .iter()
        .flat_map(|n| n.sinks())
        .zip(&config.incidents.alertmanager)
        .filter(|(_, a)| a.read_silences)
        .filter_map(|(s, _)| match s {
            Sink::Alertmanager(c) => Some(c.clone()),
            _ => None,
        })
        .collect();
    let mut explaining = crate::explain::Explaining::start(&config, hub.clone()).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build();
    let mut last_silences = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(NOTIFY_EVERY) => {}
        }
        let packs = hub.packs();
        let explanations = explaining.update(&packs).await;
        if let Some(notifier) = notifier.as_mut() {
            let report = notifier
                .tick_explained(&packs, hub.now(), &explanations)
                .await;
            for (_, sink, error) in &report.failed {
                eprintln!("portent: notifying {sink}: {error} (retried with backoff)");
            }
            for (_, id, state) in &report.delivered {
                eprintln!("portent: incident {id} {state}: sent");
            }
        }
        if last_silences.elapsed() >= config.incidents.silences_every {
            last_silences = tokio::time::Instant::now();
            let Ok(client) = &client else { continue };
            for am in &silence_sources {
                match am.silences(client).await {
                    Ok(silences) => match hub.apply_silences(&silences) {
                        Ok(0) => {}
                        Ok(n) => eprintln!("portent: {n} Alertmanager silences taken as feedback"),
                        Err(e) => eprintln!("portent: {e}"),
                    },
                    Err(e) => eprintln!("portent: reading silences: {e}"),
                }
            }
        }
    }
}

/// A source that leaves out the samples of false positives' windows from history (warm-ups and
/// fits): what the operator called a false positive is not learnt from. Score reads are left
/// whole, so that the exclusion never shows up as missing data.
pub(crate) struct Excluding<'a, S> {
    pub(crate) inner: S,
    pub(crate) windows: &'a [SeriesWindow],
}

impl<S: HistorySource> HistorySource for Excluding<'_, S> {
    type Error = S::Error;

    fn query_range(&mut self, q: &RangeQuery<'_>) -> Result<Vec<Series>, S::Error> {
        let mut series = self.inner.query_range(q)?;
        if self.windows.is_empty() || q.request == Request::Score {
            return Ok(series);
        }
        for s in &mut series {
            let windows: Vec<&SeriesWindow> = self
                .windows
                .iter()
                .filter(|w| w.query == q.query && w.labels == s.labels)
                .collect();
            if !windows.is_empty() {
                s.samples
                    .retain(|p| !windows.iter().any(|w| w.from <= p.t && p.t <= w.to));
            }
        }
        Ok(series)
    }

    /// As [`Self::query_range`], lending each series: without this, every score tick went
    /// through the copying default, one `Vec` per series.
    fn visit_range(
        &mut self,
        q: &RangeQuery<'_>,
        visit: &mut dyn FnMut(&Labels, &[Sample], &Hint),
    ) -> Result<(), S::Error> {
        if self.windows.is_empty() || q.request == Request::Score {
            return self.inner.visit_range(q, visit);
        }
        let windows = self.windows;
        let mut kept = Vec::new();
        self.inner.visit_range(q, &mut |labels, samples, hint| {
            let mine: Vec<&SeriesWindow> = windows
                .iter()
                .filter(|w| w.query == q.query && &w.labels == labels)
                .collect();
            if mine.is_empty() {
                return visit(labels, samples, hint);
            }
            kept.clear();
            kept.extend(
                samples
                    .iter()
                    .filter(|p| !mine.iter().any(|w| w.from <= p.t && p.t <= w.to)),
            );
            visit(labels, &kept, hint);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portent_core::{Scored, Timestamp};
    use portent_engine::MemorySource;

    /// The daemon's incident glue over a pull config with one query, `query`, and the name of
    /// its default model; the directory holds its state.
    fn daemon(query: &str) -> (tempfile::TempDir, Incidents, Arc<str>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("portent.yml");
        std::fs::write(
            &path,
            format!(
                "source:\n  pull:\n    url: http://127.0.0.1:9\nqueries:\n  {query}:\n    \
                 expr: up\nstorage:\n  dir: {}\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let config = portent_config::Config::load(&path).unwrap();
        let incidents = Incidents::new(&config).unwrap().unwrap();
        let model: Arc<str> = config.models.keys().next().unwrap().as_str().into();
        (dir, incidents, model)
    }

    /// Regression: the daemon handed the hub only verdicts at or above their threshold, so an
    /// incident whose member stayed beyond its pre-incident band (errors that stay up after a
    /// bad rollout) still resolved after `resolve_after`, and pods were never placed on nodes.
    #[test]
    fn the_daemon_hands_over_what_keeps_an_incident_open_and_places_pods() {
        let (_dir, incidents, model) = daemon("q");
        let at = |min: i64| Timestamp::from_secs(1_800_000_000 + 60 * min);
        let errors = Labels::new([("namespace", "shop"), ("pod", "api-7d9f8-xk2p")]).unwrap();
        let cpu = Labels::new([
            ("namespace", "shop"),
            ("pod", "api-7d9f8-xk2p"),
            ("node", "n1"),
        ])
        .unwrap();
        // As the scheduler reports them: each series' first verdict is marked so.
        let reported = std::cell::RefCell::new(std::collections::HashSet::new());
        let verdict = |labels: &Labels, min: i64, value: f64, score: f64| StepScore {
            first: reported.borrow_mut().insert(labels.clone()),
            model: Arc::clone(&model),
            query: "q".into(),
            labels: labels.clone(),
            scored: Scored {
                t: at(min),
                value,
                score: Score::new(score).unwrap(),
                yhat: 10.0,
                yhat_lower: 8.0,
                yhat_upper: 12.0,
                reason: None,
            },
        };
        let node = Labels::new([("node", "n1")]).unwrap();
        let ledger =
            Labels::new([("namespace", "billing"), ("pod", "ledger-5c6b7d8f9-2x4zq")]).unwrap();
        let ledger_cpu = Labels::new([
            ("namespace", "billing"),
            ("pod", "ledger-5c6b7d8f9-2x4zq"),
            ("node", "n1"),
        ])
        .unwrap();
        incidents.observe(&[verdict(&ledger_cpu, -1, 10.0, 0.0)], at(-1));
        incidents.observe(
            &[verdict(&errors, 0, 40.0, 0.95), verdict(&cpu, 0, 10.0, 0.0)],
            at(0),
        );
        // An hour of errors still at 30, scored as ordinary by a detector that adapted.
        for min in 1..=60 {
            incidents.observe(
                &[
                    verdict(&errors, min, 30.0, 0.1),
                    verdict(&cpu, min, 10.0, 0.0),
                ],
                at(min),
            );
        }
        let open = incidents.hub.packs();
        assert_eq!(open.len(), 1);
        assert_eq!(
            open[0].incident.state,
            portent_incidents::State::Firing,
            "{open:?}"
        );
        let c = incidents.hub.counters();
        assert_eq!(c.sustained, 60, "{c:?}");

        // Node n1 breaks; a pod seen on n1 only through its CPU series (below any threshold,
        // before any incident was open) then breaks in a series that names no node: it joins
        // the node's incident.
        incidents.observe(&[verdict(&node, 62, 40.0, 0.95)], at(62));
        incidents.observe(&[verdict(&ledger, 63, 40.0, 0.95)], at(63));
        let packs = incidents.hub.packs();
        assert_eq!(packs.len(), 2, "{packs:?}");
        assert!(
            packs.iter().any(|p| p.series.len() == 2),
            "the ledger pod joined the node's incident: {packs:?}"
        );
    }

    #[test]
    fn the_daemon_teaches_the_hub_each_replicasets_values_so_a_bad_rollout_is_named() {
        let (_dir, incidents, model) = daemon("errors");
        let at = |min: i64| Timestamp::from_secs(1_800_000_000 + 60 * min);
        let pod = |p: &str| {
            Labels::new([
                ("__name__", "pod_error_ratio"),
                ("namespace", "shop"),
                ("pod", p),
            ])
            .unwrap()
        };
        let service = Labels::new([
            ("__name__", "service_error_ratio"),
            ("namespace", "shop"),
            ("service", "api"),
        ])
        .unwrap();
        // What the pods' detectors say: nothing unusual, old or new (the new pods' detectors
        // have no history; they learn 30% errors as normal).
        let reported = std::cell::RefCell::new(std::collections::HashSet::new());
        let verdict = |labels: &Labels, min: i64, value: f64, score: f64| StepScore {
            first: reported.borrow_mut().insert(labels.clone()),
            model: Arc::clone(&model),
            query: "errors".into(),
            labels: labels.clone(),
            scored: Scored {
                t: at(min),
                value,
                score: Score::new(score).unwrap(),
                yhat: 0.01,
                yhat_lower: 0.0,
                yhat_upper: 0.02,
                reason: None,
            },
        };
        for min in -30..=5 {
            let mut step = vec![verdict(&pod("api-7d9f8-xk2pq"), min, 0.01, 0.0)];
            if min < 0 {
                step.push(verdict(&pod("api-7d9f8-bcdfg"), min, 0.012, 0.0));
            } else {
                step.push(verdict(&pod("api-5c6b7-zzzzz"), min, 0.3, 0.1));
            }
            if min >= 1 {
                step.push(verdict(&service, min, 0.15, 0.95));
            }
            incidents.observe(&step, at(min));
        }
        let packs = incidents.hub.packs();
        assert_eq!(packs.len(), 1, "{packs:?}");
        let top = &packs[0].series[0];
        assert_eq!(top.model, portent_incidents::ROLLOUT_MODEL, "{packs:?}");
        assert!(top.series.contains("api-5c6b7-zzzzz"), "{top:?}");
        assert_eq!(incidents.hub.counters().rollouts, 1);
    }

    #[test]
    fn excluded_windows_are_left_out_of_reads_of_that_series_only() {
        let a = Labels::new([("pod", "a")]).unwrap();
        let b = Labels::new([("pod", "b")]).unwrap();
        let series = |labels: &Labels| Series {
            labels: labels.clone(),
            samples: (0..10)
                .map(|i| Sample {
                    t: Timestamp::from_secs(i),
                    v: 1.0,
                })
                .collect(),
        };
        let mut mem = MemorySource::new();
        mem.insert("q", series(&a));
        mem.insert("q", series(&b));
        let windows = [SeriesWindow {
            labels: a.clone(),
            query: "q".into(),
            model: "m".into(),
            from: Timestamp::from_secs(3),
            to: Timestamp::from_secs(5),
            peak_deviation: None,
        }];
        let mut src = Excluding {
            inner: &mut mem,
            windows: &windows,
        };
        let q = RangeQuery {
            query: "q",
            expr: "x",
            start: Timestamp::from_secs(0),
            end: Timestamp::from_secs(9),
            step_ms: 1000,
            request: portent_engine::Request::Fit,
        };
        let got = src.query_range(&q).unwrap();
        let len = |l: &Labels| got.iter().find(|s| &s.labels == l).unwrap().samples.len();
        assert_eq!((len(&a), len(&b)), (7, 10));
        // Samples to score are never left out: that would read as missing data.
        let score = RangeQuery {
            request: Request::Score,
            ..q
        };
        assert_eq!(src.query_range(&score).unwrap()[0].samples.len(), 10);
        let other = RangeQuery { query: "r", ..q };
        mem.insert("r", series(&a));
        let mut src = Excluding {
            inner: &mut mem,
            windows: &windows,
        };
        assert_eq!(src.query_range(&other).unwrap()[0].samples.len(), 10);
    }
}
