//! Explanations in the API: the latest explanation of each incident (written by the daemon's
//! notifier, from an LLM when one is configured), the explainer that answers questions, and
//! the Slack signing secret.
//!
//! The daemon explains an incident when its state changes (see `portent serve`); the API shows
//! that explanation. An incident not explained yet (pending, or its explanation still on its
//! way) is shown with the deterministic explanation and its runbooks, computed on the spot: it
//! never waits for a model.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use portent_explain::{
    ActionOutcome, Catalogue, Explainer, ExplainerConfig, Explanation, Outcome, Secret,
};
use portent_incidents::{EvidencePack, State as IncidentState};
use serde_json::{Value, json};

/// An explanation kept for the API, with what it was made for.
#[derive(Clone, Debug)]
pub struct Stored {
    /// The incident's state when it was explained.
    pub state: IncidentState,
    /// The explanation.
    pub explanation: Explanation,
    /// What happened to the matched runbook entries' actions (dry-run by default).
    pub actions: Vec<ActionOutcome>,
}

/// The explanation side of the [`Hub`](crate::Hub); cloning shares it.
#[derive(Clone, Debug)]
pub struct Explanations {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    explainer: Arc<Explainer>,
    /// Same runbooks, no model: what the API shows before the notifier has explained.
    deterministic: Explainer,
    slack_secret: Option<Secret>,
    latest: Mutex<BTreeMap<String, Stored>>,
}

impl Default for Explanations {
    fn default() -> Self {
        Self::new(
            Arc::new(Explainer::new(
                None,
                Catalogue::default(),
                ExplainerConfig::default(),
            )),
            None,
        )
    }
}

impl Explanations {
    /// Explanations by `explainer`; slash commands are answered only with a `slack_secret`.
    pub fn new(explainer: Arc<Explainer>, slack_secret: Option<Secret>) -> Self {
        let deterministic = Explainer::new(
            None,
            explainer.runbooks().clone(),
            ExplainerConfig::default(),
        );
        Self {
            inner: Arc::new(Inner {
                explainer,
                deterministic,
                slack_secret,
                latest: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    fn latest(&self) -> MutexGuard<'_, BTreeMap<String, Stored>> {
        self.inner
            .latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The explainer (with the model, when one is configured).
    pub fn explainer(&self) -> &Arc<Explainer> {
        &self.inner.explainer
    }

    /// The Slack signing secret, if slash commands are on.
    pub fn slack_secret(&self) -> Option<&Secret> {
        self.inner.slack_secret.as_ref()
    }

    /// Keeps `stored` as incident `id`'s explanation.
    pub fn store(&self, id: &str, stored: Stored) {
        self.latest().insert(id.to_owned(), stored);
    }

    /// Incident `id`'s latest explanation.
    pub fn get(&self, id: &str) -> Option<Stored> {
        self.latest().get(id).cloned()
    }

    /// Forgets the explanations of incidents not in `live` (those the hub no longer keeps).
    pub fn retain(&self, live: &BTreeSet<&str>) {
        self.latest().retain(|id, _| live.contains(id.as_str()));
    }

    /// The deterministic explanation of `pack`, with its runbooks (no model, no I/O).
    pub async fn deterministic(&self, pack: &EvidencePack) -> Explanation {
        self.inner.deterministic.explain(pack).await
    }

    /// What the API shows for `pack`: the latest explanation, else the deterministic one.
    pub async fn current(&self, pack: &EvidencePack) -> Stored {
        match self.get(&pack.incident.id) {
            Some(s) => s,
            None => Stored {
                state: pack.incident.state,
                explanation: self.deterministic(pack).await,
                actions: Vec::new(),
            },
        }
    }
}

/// `llm`, `deterministic` or `fallback`: which path wrote an explanation.
pub fn source(e: &Explanation) -> &'static str {
    match e.outcome {
        Outcome::Deterministic => "deterministic",
        Outcome::Model { .. } => "llm",
        Outcome::Fallback { .. } => "fallback",
    }
}

/// The deterministic text's "Most likely cause" line, without its label.
fn deterministic_cause(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("Most likely cause: "))
        .map(|c| c.trim_end_matches('.').to_owned())
}

/// The summary, likely cause, cited evidence IDs and suggested actions of `e`: the model's
/// answer, or what the deterministic text says (its first line, its most likely cause, the
/// pack's root-cause candidates).
fn parts(
    e: &Explanation,
    pack: Option<&EvidencePack>,
) -> (String, Option<String>, Vec<String>, Vec<String>) {
    match &e.answer {
        Some(a) => (
            a.summary.clone(),
            Some(a.likely_cause.clone()),
            a.evidence_ids.clone(),
            a.actions.clone(),
        ),
        None => (
            e.text.lines().next().unwrap_or_default().to_owned(),
            deterministic_cause(&e.text),
            pack.map(|p| {
                p.candidates
                    .iter()
                    .take(3)
                    .map(|c| c.evidence_id.clone())
                    .collect()
            })
            .unwrap_or_default(),
            Vec::new(),
        ),
    }
}

/// The structured explanation the API and webhooks carry.
pub fn detail(stored: &Stored, pack: Option<&EvidencePack>) -> Value {
    let e = &stored.explanation;
    let (summary, likely_cause, evidence_ids, actions) = parts(e, pack);
    let (model, fallback_reason) = match &e.outcome {
        Outcome::Model { model, .. } => (Some(model.clone()), None),
        Outcome::Fallback { reason } => (None, Some(reason.clone())),
        Outcome::Deterministic => (None, None),
    };
    json!({
        "source": source(e),
        "model": model,
        "fallback_reason": fallback_reason,
        "for_state": stored.state,
        "summary": summary,
        "likely_cause": likely_cause,
        "evidence_ids": evidence_ids,
        "actions": actions,
        "runbooks": e.runbooks,
        "runbook_actions": stored.actions,
        "text": e.text,
        "usage": e.usage,
        "cached": e.cached,
        "fingerprint": e.fingerprint,
    })
}

/// Alertmanager annotations for `e`: `description` (the text), `explanation_source`,
/// `likely_cause`, `evidence_ids`, `runbook` (the matched entries and their steps) and
/// `runbook_url` (an entry's first link); `summary` too when a model wrote it (portent's own
/// one-line summary is kept otherwise).
pub fn annotations(e: &Explanation, pack: &EvidencePack) -> BTreeMap<String, String> {
    let mut a = e.annotations();
    if e.answer.is_none() {
        a.remove("summary");
    }
    let (_, likely_cause, evidence_ids, _) = parts(e, Some(pack));
    a.insert("explanation_source".into(), source(e).to_owned());
    if let Some(c) = likely_cause {
        a.insert("likely_cause".into(), c);
    }
    if !evidence_ids.is_empty() {
        a.insert("evidence_ids".into(), evidence_ids.join(", "));
    }
    if !e.runbooks.is_empty() {
        let mut text = String::new();
        for r in &e.runbooks {
            text.push_str(&format!("{}:", r.entry));
            for (i, s) in r.steps.iter().enumerate() {
                text.push_str(&format!(" {}. {s}", i + 1));
            }
            text.push('\n');
        }
        a.insert("runbook".into(), text.trim_end().to_owned());
    }
    a
}
