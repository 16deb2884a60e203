//! Explanations in `portent serve`: the config's `explain` section turned into an
//! [`Explainer`] (runbooks, optional LLM, pseudonymisation), evidence sources (Kubernetes
//! events, Loki) and a runbook [`ActionRunner`], and the work the notifier does with them.
//!
//! **When.** An incident is explained when it turns firing and again when it resolves (pending
//! incidents are never announced; the API shows them with the deterministic explanation).
//! Each explanation runs in its own task: at most [`MAX_EXPLAINING`] at a time, each bounded
//! by a deadline (twice the LLM's per-attempt timeout plus the evidence sources' limits), so
//! neither the scoring loop nor the notifier ever waits on a model. A task that misses its
//! deadline yields the deterministic explanation, marked as a fallback. With nothing to wait
//! for (no model, no evidence source, no live action webhook) the explanation is made on the
//! spot instead, so that a page is not held back a tick for nothing.
//!
//! **One notification per state change.** The notifier holds an incident's state change back
//! while its explanation is on its way, for at most [`EXPLAIN_WAIT`]; past that it sends what
//! it has (the deterministic text) and does not send again when the explanation arrives late.
//! Alertmanager still gets the late explanation: firing alerts are re-posted every
//! `resend_every` with the latest annotations, and Alertmanager keeps the newest. Slack and
//! webhooks keep the text they were sent; the API always shows the latest.
//!
//! **Actions.** A matched runbook entry's action is handed to the [`ActionRunner`] when the
//! incident fires. It runs only when the entry is `automatic: true` and names one of
//! `explain.actions.webhooks`, at most once per incident, and is sent only with
//! `explain.actions.live: true` (otherwise the body it would send is recorded). Its body comes
//! from the catalogue and the incident, never from the model. What happened is shown in the API
//! (`explanation_detail.runbook_actions`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use portent_config::{Config, LlmProvider};
use portent_explain::{
    ActionRunner, ActionStatus, Catalogue, EventSource, EventsConfig, Explainer, ExplainerConfig,
    LlmClient, LlmConfig, LokiConfig, LokiSource, Outcome, ProviderKind, Webhook,
};
use portent_incidents::notify::{Explained, Explanations as NotifyExplanations};
use portent_incidents::{EvidencePack, State};
use portent_server::Hub;
use portent_server::explain::{self, Explanations, Stored};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

/// Explanations made at the same time, at most: each may hold an LLM call open for a minute,
/// and an incident storm should not become a storm of model calls.
pub(crate) const MAX_EXPLAINING: usize = 4;

/// How long a state change waits for its explanation before it is sent without it.
pub(crate) const EXPLAIN_WAIT: Duration = Duration::from_secs(20);

/// How long Kubernetes events may take to set up (reading the kubeconfig or the service
/// account) before portent goes on without them.
const EVENTS_SETUP: Duration = Duration::from_secs(10);

/// The explanation side of the hub for `config`: the explainer (with the LLM when one is
/// configured) and the Slack signing secret. Fails on a runbook catalogue that does not parse,
/// so that a mistake in it shows at start rather than as missing runbooks.
pub(crate) fn explanations(config: &Config) -> Result<Explanations> {
    let e = &config.explain;
    let runbooks = match &e.runbooks {
        Some(p) => {
            Catalogue::load(p).with_context(|| format!("explain.runbooks {}", p.display()))?
        }
        None => Catalogue::default(),
    };
    let llm = match &e.llm {
        Some(l) => {
            let mut c = LlmConfig::new(
                match l.provider {
                    LlmProvider::Anthropic => ProviderKind::Anthropic,
                    LlmProvider::OpenAi => ProviderKind::OpenAi,
                },
                l.url.as_str(),
                l.model.clone(),
            );
            c.api_key = l.api_key.clone();
            c.max_tokens = l.max_tokens;
            c.timeout = l.timeout;
            c.json_mode = l.json_mode;
            c.budget.max_tokens = l.max_tokens_per_incident;
            c.budget.max_cost = l.max_cost_per_incident;
            c.budget.input_price_per_mtok = l.input_price_per_mtok;
            c.budget.output_price_per_mtok = l.output_price_per_mtok;
            Some(LlmClient::new(c).context("explain.llm")?)
        }
        None => None,
    };
    let explainer = Explainer::new(
        llm,
        runbooks,
        ExplainerConfig {
            pseudonymise: e.pseudonymize,
            ..ExplainerConfig::default()
        },
    );
    Ok(Explanations::new(
        Arc::new(explainer),
        e.slack_signing_secret.clone(),
    ))
}

/// What an explanation task needs; shared by every task.
struct Work {
    explanations: Explanations,
    events: Option<EventSource>,
    loki: Option<LokiSource>,
    runner: Option<ActionRunner>,
    permits: Semaphore,
    deadline: Duration,
    /// Nothing to wait for (no model, no evidence source, no live action webhook): explain
    /// on the spot, so that a page is not held back a tick for nothing.
    inline: bool,
}

/// A finished explanation.
struct Done {
    id: String,
    stored: Stored,
}

/// The explanations the notifier is waiting for, and those it has.
pub(crate) struct Explaining {
    hub: Hub,
    work: Arc<Work>,
    tx: mpsc::UnboundedSender<Done>,
    rx: mpsc::UnboundedReceiver<Done>,
    /// Incident → the state being explained and when that started.
    inflight: HashMap<String, (State, Instant)>,
}

impl Explaining {
    /// Sets up the evidence sources of `config.explain` (a source that cannot be set up is
    /// left out with a warning: less evidence, never no explanation).
    pub(crate) async fn start(config: &Config, hub: Hub) -> Self {
        let e = &config.explain;
        let events = if e.kubernetes_events {
            match tokio::time::timeout(EVENTS_SETUP, EventSource::infer(EventsConfig::default()))
                .await
            {
                Ok(Ok(s)) => Some(s),
                Ok(Err(err)) => {
                    eprintln!("portent: explain.kubernetes_events: {err}; going on without events");
                    None
                }
                Err(_) => {
                    eprintln!(
                        "portent: explain.kubernetes_events: no Kubernetes client within \
                         {EVENTS_SETUP:?}; going on without events"
                    );
                    None
                }
            }
        } else {
            None
        };
        let loki = e.loki.as_ref().and_then(|l| {
            let mut c = LokiConfig::new(l.url.as_str());
            c.org_id = l.tenant.clone();
            c.bearer = l.bearer_token.clone();
            LokiSource::new(c)
                .inspect_err(|err| eprintln!("portent: explain.loki: {err}; going on without logs"))
                .ok()
        });
        // Evidence takes at most its sources' timeouts (5 s each, concurrently); the model up
        // to two attempts of `timeout` (the explainer's re-ask after a rejected answer).
        let llm_time = e.llm.as_ref().map_or(Duration::ZERO, |l| l.timeout * 2);
        let deadline = llm_time + Duration::from_secs(15);
        let webhooks: BTreeMap<String, Webhook> = e
            .actions
            .webhooks
            .iter()
            .map(|(name, w)| {
                let hook = Webhook {
                    url: w.url.to_string(),
                    bearer: w.bearer_token.clone(),
                };
                (name.clone(), hook)
            })
            .collect();
        let runner = ActionRunner::new(webhooks)
            .map(|r| r.live(e.actions.live))
            .inspect_err(|err| eprintln!("portent: runbook actions are off: {err}"))
            .ok();
        let inline = e.llm.is_none()
            && events.is_none()
            && loki.is_none()
            && (!e.actions.live || e.actions.webhooks.is_empty());
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            work: Arc::new(Work {
                explanations: hub.explanations().clone(),
                events,
                loki,
                runner,
                permits: Semaphore::new(MAX_EXPLAINING),
                deadline,
                inline,
            }),
            hub,
            tx,
            rx,
            inflight: HashMap::new(),
        }
    }

    /// One notifier tick: keeps the explanations that finished, starts those `packs` need,
    /// and returns what the notifier should send with (and which state changes wait).
    pub(crate) async fn update(&mut self, packs: &[EvidencePack]) -> NotifyExplanations {
        let store = self.hub.explanations().clone();
        while let Ok(done) = self.rx.try_recv() {
            if self
                .inflight
                .get(&done.id)
                .is_some_and(|(s, _)| *s == done.stored.state)
            {
                self.inflight.remove(&done.id);
            }
            keep(&store, &done.id, done.stored);
        }
        let live: BTreeSet<&str> = packs.iter().map(|p| p.incident.id.as_str()).collect();
        store.retain(&live);
        self.inflight.retain(|id, _| live.contains(id.as_str()));

        let mut out = NotifyExplanations::default();
        for pack in packs {
            let id = &pack.incident.id;
            let state = pack.incident.state;
            if state == State::Pending {
                continue;
            }
            let mut stored = store.get(id);
            let explained = stored.as_ref().is_some_and(|s| s.state == state);
            let asked = self.inflight.get(id).filter(|(s, _)| *s == state);
            match (explained, asked) {
                (true, _) => {}
                (false, Some((_, since))) => {
                    if since.elapsed() < EXPLAIN_WAIT {
                        out.hold.insert(id.clone());
                    }
                }
                (false, None) if self.work.inline => {
                    let s = explain_one(&self.work, pack.clone()).await;
                    keep(&store, id, s.clone());
                    stored = Some(s);
                }
                (false, None) => {
                    self.spawn(pack.clone());
                    self.inflight.insert(id.clone(), (state, Instant::now()));
                    out.hold.insert(id.clone());
                }
            }
            if let Some(s) = stored {
                out.by_incident.insert(
                    id.clone(),
                    Explained {
                        text: s.explanation.text.clone(),
                        annotations: explain::annotations(&s.explanation, pack),
                        detail: Some(explain::detail(&s, Some(pack))),
                    },
                );
            }
        }
        out
    }

    fn spawn(&self, pack: EvidencePack) {
        let work = Arc::clone(&self.work);
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let id = pack.incident.id.clone();
            let stored = explain_one(&work, pack).await;
            // The receiver is gone only at shutdown.
            let _ = tx.send(Done { id, stored });
        });
    }
}

/// Logs what an explanation task did (the model's answer or why it was not used, and runbook
/// actions) and keeps its result for the API and the notifier.
fn keep(store: &Explanations, id: &str, stored: Stored) {
    let e = &stored.explanation;
    match &e.outcome {
        Outcome::Deterministic => {}
        Outcome::Fallback { reason } => {
            eprintln!("portent: incident {id} explained deterministically: {reason}");
        }
        Outcome::Model { model, .. } => eprintln!(
            "portent: incident {id} explained by {model} ({} input and {} output tokens)",
            e.usage.input_tokens, e.usage.output_tokens
        ),
    }
    for a in &stored.actions {
        let what = match &a.status {
            ActionStatus::Suggested | ActionStatus::AlreadyRun => continue,
            ActionStatus::UnknownWebhook => {
                "not run: its webhook is not in explain.actions.webhooks".to_owned()
            }
            ActionStatus::DryRun { .. } => {
                "dry-run (explain.actions.live is off): nothing sent".to_owned()
            }
            ActionStatus::Sent { code } => format!("sent, HTTP {code}"),
            ActionStatus::Failed { error } => format!("failed: {error}"),
        };
        eprintln!(
            "portent: incident {id}: runbook {} action on webhook {}: {what}",
            a.entry, a.webhook
        );
    }
    store.store(id, stored);
}

/// Explains one incident: more evidence, the explanation, the runbook actions (when firing),
/// all within the deadline; past it, the deterministic explanation.
async fn explain_one(work: &Work, mut pack: EvidencePack) -> Stored {
    let state = pack.incident.state;
    let id = pack.incident.id.clone();
    let job = async {
        // A closed semaphore cannot happen (it is never closed); go on without a permit.
        let _permit = work.permits.acquire().await.ok();
        let errors =
            portent_explain::evidence::enrich(&mut pack, work.events.as_ref(), work.loki.as_ref())
                .await;
        for e in errors {
            eprintln!("portent: incident {id}: less evidence: {e}");
        }
        let explanation = work.explanations.explainer().explain(&pack).await;
        let actions = match &work.runner {
            Some(r) if state == State::Firing => r.run(&id, &explanation.runbooks).await,
            _ => Vec::new(),
        };
        Stored {
            state,
            explanation,
            actions,
        }
    };
    match tokio::time::timeout(work.deadline, job).await {
        Ok(s) => s,
        Err(_) => {
            let mut explanation = work.explanations.deterministic(&pack).await;
            explanation.outcome = Outcome::Fallback {
                reason: format!("no explanation within {:?}", work.deadline),
            };
            Stored {
                state,
                explanation,
                actions: Vec::new(),
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use portent_core::{Labels, Reason, Score, Scored, Timestamp};
    use portent_incidents::{Anomaly, Correlator, CorrelatorConfig, PackConfig};

    use super::*;

    /// A fake Anthropic API on 127.0.0.1 whose every answer is `text`; counts requests.
    fn fake_model(text: &'static str) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 16384];
                // The whole request: headers, then Content-Length bytes.
                loop {
                    match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        break;
                    }
                }
                counted.fetch_add(1, Ordering::SeqCst);
                let body = serde_json::json!({
                    "content": [{"type": "text", "text": text}],
                    "usage": {"input_tokens": 100, "output_tokens": 10},
                })
                .to_string();
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        (url, calls)
    }

    fn pack() -> EvidencePack {
        let mut c = Correlator::new(CorrelatorConfig::default());
        let node = Labels::new([("__name__", "node_cpu"), ("node", "n1")]).unwrap();
        for min in 0..5 {
            c.observe(&Anomaly {
                labels: node.clone(),
                query: "q".into(),
                model: "m".into(),
                scored: Scored {
                    t: Timestamp::from_secs(1_800_000_000 + 60 * min),
                    value: 95.0,
                    score: Score::ONE,
                    yhat: 40.0,
                    yhat_lower: 35.0,
                    yhat_upper: 45.0,
                    reason: Some(Reason::LevelShift),
                },
            });
        }
        EvidencePack::build(
            &c.incidents()[0],
            &c.config().topology,
            &PackConfig::default(),
        )
    }

    fn work(url: &str) -> Work {
        let mut c = LlmConfig::new(ProviderKind::Anthropic, url, "fake");
        c.api_key = Some(portent_explain::Secret::new("k"));
        c.max_retries = 0;
        let explainer = Explainer::new(
            Some(LlmClient::new(c).unwrap()),
            Catalogue::default(),
            ExplainerConfig::default(),
        );
        Work {
            explanations: Explanations::new(Arc::new(explainer), None),
            events: None,
            loki: None,
            runner: None,
            permits: Semaphore::new(1),
            deadline: Duration::from_secs(20),
            inline: false,
        }
    }

    #[tokio::test]
    async fn a_malformed_model_answer_gives_the_deterministic_explanation() {
        let (url, calls) = fake_model("Sure! The incident is about CPU, I think.");
        let pack = pack();
        let stored = explain_one(&work(&url), pack.clone()).await;
        let e = &stored.explanation;
        let Outcome::Fallback { reason } = &e.outcome else {
            panic!("not a fallback: {:?}", e.outcome);
        };
        assert!(reason.starts_with("answer: no JSON object"), "{reason}");
        // Asked once, then once more quoting the error.
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(e.text, pack.explain());
        assert!(e.answer.is_none());
        let a = explain::annotations(e, &pack);
        assert_eq!(a["explanation_source"], "fallback");
        // portent's own summary stays on the alert; the description is the deterministic text.
        assert!(!a.contains_key("summary"));
        assert_eq!(a["description"], pack.explain());
        assert!(a["likely_cause"].contains("node_cpu"), "{a:?}");
        let d = explain::detail(&stored, Some(&pack));
        assert_eq!(d["source"], "fallback");
        assert_eq!(d["evidence_ids"][0], "e1");
    }

    #[tokio::test]
    async fn an_answer_citing_unknown_evidence_is_not_used_either() {
        let (url, _) = fake_model(
            r#"{"summary": "s", "likely_cause": "c", "evidence_ids": ["e99"], "actions": []}"#,
        );
        let stored = explain_one(&work(&url), pack()).await;
        assert!(
            matches!(&stored.explanation.outcome, Outcome::Fallback { reason } if reason.contains("e99")),
            "{:?}",
            stored.explanation.outcome
        );
    }

    /// A config with `storage.dir` and the runbooks in `dir`, and `actions` as its
    /// `explain.actions` section.
    fn config(dir: &std::path::Path, actions: &str) -> Config {
        std::fs::write(
            dir.join("runbooks.yml"),
            "entries:
  - name: auto-known
    match: { labels: { __name__: node_cpu } }
    steps: [\"Drain the node\"]
    action: { webhook: drain, automatic: true, payload: { node: n1 } }
  - name: auto-unknown
    steps: [\"Look\"]
    action: { webhook: nowhere, automatic: true }
  - name: manual
    steps: [\"Look\"]
    action: { webhook: drain }
",
        )
        .unwrap();
        let yaml = format!(
            "source:
  push:
queries:
  q:
    expr: node_cpu
storage:
  dir: state
explain:
  runbooks: runbooks.yml
  actions:
{actions}
"
        );
        Config::from_yaml(&yaml, dir).unwrap()
    }

    /// Explains `pack()` with the hub and sources `config` sets up.
    async fn explained(config: &Config) -> Stored {
        let hub = crate::incidents::Incidents::new(config)
            .unwrap()
            .unwrap()
            .hub;
        let explaining = Explaining::start(config, hub).await;
        explain_one(&explaining.work, pack()).await
    }

    #[tokio::test]
    async fn runbook_actions_are_dry_run_unless_live_and_only_automatic_ones_to_known_webhooks() {
        let dir = tempfile::tempdir().unwrap();
        let (url, calls) = fake_model("{}");
        let hooks = format!("    webhooks:\n      drain:\n        url: {url}/drain");
        let stored = explained(&config(dir.path(), &hooks)).await;
        let status = |entry: &str| {
            let a = stored.actions.iter().find(|a| a.entry == entry).unwrap();
            serde_json::to_value(&a.status).unwrap()
        };
        assert_eq!(status("auto-known")["status"], "dry_run");
        assert_eq!(
            status("auto-known")["would_send"]["payload"]["node"],
            "n1",
            "{:?}",
            stored.actions
        );
        assert_eq!(status("auto-unknown")["status"], "unknown_webhook");
        assert_eq!(status("manual")["status"], "suggested");
        assert_eq!(calls.load(Ordering::SeqCst), 0, "a dry run sent something");
        assert!(stored.explanation.text.contains("Drain the node"));

        // Live: the automatic entry with a configured webhook is sent, once.
        let live = format!("    live: true\n{hooks}");
        let stored = explained(&config(dir.path(), &live)).await;
        let a = stored
            .actions
            .iter()
            .find(|a| a.entry == "auto-known")
            .unwrap();
        assert_eq!(a.status, ActionStatus::Sent { code: 200 });
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_model_that_never_answers_costs_the_deadline_not_the_notifier() {
        // Accepts connections and never answers.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let mut w = work(&url);
        w.deadline = Duration::from_millis(300);
        let started = std::time::Instant::now();
        let stored = explain_one(&w, pack()).await;
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(
            matches!(&stored.explanation.outcome, Outcome::Fallback { reason } if reason.starts_with("no explanation within")),
            "{:?}",
            stored.explanation.outcome
        );
        drop(listener);
    }
}
