//! The explainer: a deterministic explanation always, a validated model answer when an LLM is
//! configured and behaves.
//!
//! [`Explainer::explain`] on a pack:
//! 1. matches the runbook catalogue (its entries go into every explanation);
//! 2. without an LLM, renders [`EvidencePack::explain`], the events, logs and runbooks;
//! 3. with one: looks the pack's fingerprint up in the cache; checks the incident's token and
//!    cost budget; pseudonymises the prompt if configured; asks; validates the answer
//!    ([`crate::answer::parse`]); on a validation error asks once more, quoting the error;
//!    restores the names; and otherwise falls back to the deterministic text.
//!
//! [`Explanation::outcome`] says which path produced the text, and why a fallback happened.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Mutex;

use portent_incidents::EvidencePack;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::answer::{self, Answer};
use crate::error::{Error, Result};
use crate::evidence::{self, KubeEvent, LogLine};
use crate::llm::{LlmClient, Message, Role};
use crate::prompt;
use crate::pseudo::Pseudonymiser;
use crate::runbook::{self, Catalogue, RunbookMatch};

/// Which path produced an explanation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// No LLM is configured: the deterministic text.
    Deterministic,
    /// The model's validated answer.
    Model {
        /// The model.
        model: String,
        /// Answers asked for: 1, or 2 when the first failed validation.
        attempts: u32,
    },
    /// An LLM is configured but its answer could not be used: the deterministic text.
    Fallback {
        /// Why, e.g. `answer: unknown evidence IDs e9; …` or `llm: status 503`.
        reason: String,
    },
}

/// Tokens used for one explanation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// US dollars, when prices are configured.
    pub cost: f64,
}

/// An explanation of one incident (or an answer to a question).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    /// The incident's ID (`ask` for answers to questions).
    pub incident_id: String,
    /// The SHA-256 of what was explained; the cache key.
    pub fingerprint: String,
    /// The text for humans: the answer or the deterministic explanation, then the runbooks.
    pub text: String,
    /// Which path produced it.
    pub outcome: Outcome,
    /// The model's validated answer, names restored.
    pub answer: Option<Answer>,
    /// The runbook entries that match.
    pub runbooks: Vec<RunbookMatch>,
    /// Tokens spent on it (zero when cached or deterministic).
    pub usage: Usage,
    /// Whether it came from the cache.
    pub cached: bool,
}

impl Explanation {
    /// Alertmanager annotations: `summary` (one line), `description` (the text) and
    /// `runbook_url` (the first runbook link, if any).
    pub fn annotations(&self) -> BTreeMap<String, String> {
        let mut a = BTreeMap::new();
        let summary = match &self.answer {
            Some(ans) => ans.summary.clone(),
            None => self.text.lines().next().unwrap_or_default().to_owned(),
        };
        a.insert("summary".into(), summary);
        a.insert("description".into(), self.text.clone());
        if let Some(l) = self.runbooks.iter().flat_map(|r| r.links.iter()).next() {
            a.insert("runbook_url".into(), l.url.clone());
        }
        a
    }
}

/// Options of an [`Explainer`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExplainerConfig {
    /// Pseudonymise names before anything is sent to the model (default true).
    pub pseudonymise: bool,
    /// Explanations cached by fingerprint (default 256).
    pub cache_size: usize,
    /// Incidents whose spending is remembered (default 4096).
    pub budget_entries: usize,
}

impl Default for ExplainerConfig {
    fn default() -> Self {
        Self {
            pseudonymise: true,
            cache_size: 256,
            budget_entries: 4096,
        }
    }
}

#[derive(Default)]
struct Cache {
    map: BTreeMap<String, Explanation>,
    order: VecDeque<String>,
}

/// Explains incidents; see the [module docs](self). Shared by reference: the cache and the
/// budgets sit behind mutexes that are never held across an `await`.
pub struct Explainer {
    llm: Option<LlmClient>,
    runbooks: Catalogue,
    config: ExplainerConfig,
    cache: Mutex<Cache>,
    spent: Mutex<BTreeMap<String, Usage>>,
}

impl std::fmt::Debug for Explainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Explainer")
            .field("llm", &self.llm)
            .field("runbooks", &self.runbooks.entries().len())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A rough upper estimate of the tokens in `text`: tokenisers average 3–4 bytes a token on
/// English and JSON, so a third of the bytes errs on the side of spending less.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.len() as u64).div_ceil(3)
}

/// The deterministic text for events and logs.
pub(crate) fn render_extra(events: &[KubeEvent], logs: &[LogLine]) -> String {
    let mut out = String::new();
    if !events.is_empty() {
        out.push_str("Kubernetes events:\n");
        for e in events.iter().take(8) {
            out.push_str(&format!(
                "* [{}] {} {} {}/{}: {} (×{})\n",
                e.id, e.type_, e.reason, e.namespace, e.object, e.message, e.count
            ));
        }
    }
    if !logs.is_empty() {
        out.push_str("Recent log lines:\n");
        for l in logs.iter().rev().take(5).rev() {
            out.push_str(&format!(
                "* [{}] {} {}: {}\n",
                l.id,
                l.at,
                l.pod.as_deref().unwrap_or("?"),
                l.line
            ));
        }
    }
    out
}

/// The evidence IDs an answer about `pack` may cite.
pub fn known_ids(pack: &EvidencePack) -> BTreeSet<String> {
    let (events, logs) = evidence::attached(pack);
    pack.series
        .iter()
        .map(|s| s.id.clone())
        .chain(pack.correlated.iter().map(|s| s.id.clone()))
        .chain(pack.candidates.iter().map(|c| c.evidence_id.clone()))
        .chain(events.into_iter().map(|e| e.id))
        .chain(logs.into_iter().map(|l| l.id))
        .collect()
}

/// The text of a model's answer.
pub(crate) fn render_answer(a: &Answer, model: &str) -> String {
    let mut out = format!("{}\nLikely cause: {}\n", a.summary, a.likely_cause);
    out.push_str(&format!("Evidence: {}\n", a.evidence_ids.join(", ")));
    if !a.actions.is_empty() {
        out.push_str("Suggested actions (for a human; portent runs none of them):\n");
        for x in &a.actions {
            out.push_str(&format!("* {x}\n"));
        }
    }
    out.push_str(&format!(
        "(Explained by {model}; cited evidence checked by portent.)\n"
    ));
    out
}

/// What the LLM path needs besides the client.
pub(crate) struct Request<'a> {
    pub(crate) budget_key: &'a str,
    pub(crate) fingerprint: String,
    pub(crate) system: &'static str,
    pub(crate) user: String,
    pub(crate) known: BTreeSet<String>,
    pub(crate) pseudo: Option<Pseudonymiser>,
}

impl Explainer {
    /// An explainer with `runbooks` and, optionally, a model.
    pub fn new(llm: Option<LlmClient>, runbooks: Catalogue, config: ExplainerConfig) -> Self {
        Self {
            llm,
            runbooks,
            config,
            cache: Mutex::new(Cache::default()),
            spent: Mutex::new(BTreeMap::new()),
        }
    }

    pub(crate) fn config_pseudonymise(&self) -> bool {
        self.config.pseudonymise
    }

    /// Its runbook catalogue.
    pub fn runbooks(&self) -> &Catalogue {
        &self.runbooks
    }

    /// The fingerprint of `parts`: SHA-256 over the prompt version, the model and the parts.
    pub(crate) fn fingerprint(&self, parts: &[&str]) -> String {
        let mut h = Sha256::new();
        h.update(prompt::PROMPT_VERSION.to_le_bytes());
        if let Some(l) = &self.llm {
            h.update(l.config().model.as_bytes());
        }
        h.update([u8::from(self.config.pseudonymise)]);
        for p in parts {
            h.update((p.len() as u64).to_le_bytes());
            h.update(p.as_bytes());
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The explanation of `pack` (with whatever events and logs are attached to it).
    pub async fn explain(&self, pack: &EvidencePack) -> Explanation {
        let runbooks = self.runbooks.matches(pack);
        let (events, logs) = evidence::attached(pack);
        let rb_text = runbook::render(&runbooks);
        let deterministic = format!(
            "{}{}{}",
            pack.explain(),
            render_extra(&events, &logs),
            rb_text
        );
        let fingerprint = self.fingerprint(&[
            &pack.to_json(),
            &serde_json::to_string(&runbooks).unwrap_or_default(),
        ]);
        let base = Explanation {
            incident_id: pack.incident.id.clone(),
            fingerprint: fingerprint.clone(),
            text: deterministic,
            outcome: Outcome::Deterministic,
            answer: None,
            runbooks,
            usage: Usage::default(),
            cached: false,
        };
        if self.llm.is_none() {
            return base;
        }
        let pseudo = self
            .config
            .pseudonymise
            .then(|| Pseudonymiser::for_pack(pack));
        let req = Request {
            budget_key: &pack.incident.id,
            fingerprint,
            system: prompt::EXPLAIN_SYSTEM,
            user: prompt::explain_prompt(pack, &base.runbooks),
            known: known_ids(pack),
            pseudo,
        };
        self.with_model(base, req, &rb_text).await
    }

    /// Runs the model path for `req`, falling back to `base` (see the [module docs](self)).
    pub(crate) async fn with_model(
        &self,
        mut base: Explanation,
        req: Request<'_>,
        suffix: &str,
    ) -> Explanation {
        let Some(llm) = &self.llm else {
            return base;
        };
        if let Some(hit) = self.cache_get(&req.fingerprint) {
            return hit;
        }
        let model = llm.config().model.clone();
        let hide = |s: &str| match &req.pseudo {
            Some(p) => p.apply(s),
            None => s.to_owned(),
        };
        let show = |s: &str| match &req.pseudo {
            Some(p) => p.restore(s),
            None => s.to_owned(),
        };
        let system = hide(req.system);
        let mut messages = vec![Message {
            role: Role::User,
            content: hide(&req.user),
        }];
        let mut result: Result<Answer> = Err(Error::Answer("not asked".into()));
        let mut attempts = 0;
        for attempt in 0..2 {
            if let Err(e) = self.charge_estimate(req.budget_key, &system, &messages, llm) {
                result = Err(e);
                break;
            }
            attempts = attempt + 1;
            let reply = match llm.chat(&system, &messages).await {
                Ok(r) => r,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            let usage = self.charge(req.budget_key, reply.input_tokens, reply.output_tokens, llm);
            base.usage.input_tokens += usage.input_tokens;
            base.usage.output_tokens += usage.output_tokens;
            base.usage.cost += usage.cost;
            match answer::parse(&reply.text, &req.known) {
                Ok(a) => {
                    result = Ok(a);
                    break;
                }
                Err(e) => {
                    tracing::debug!(incident = %req.budget_key, error = %e, attempt, "llm: answer rejected");
                    messages.push(Message {
                        role: Role::Assistant,
                        content: reply.text,
                    });
                    messages.push(Message {
                        role: Role::User,
                        content: format!(
                            "Your answer was rejected: {e}. Answer again with only the JSON object \
                             {{\"summary\", \"likely_cause\", \"evidence_ids\", \"actions\"}}, citing only \
                             evidence IDs present in the evidence."
                        ),
                    });
                    result = Err(e);
                }
            }
        }
        match result {
            Ok(a) => {
                let a = Answer {
                    summary: show(&a.summary),
                    likely_cause: show(&a.likely_cause),
                    evidence_ids: a.evidence_ids,
                    actions: a.actions.iter().map(|x| show(x)).collect(),
                };
                base.text = format!("{}{suffix}", render_answer(&a, &model));
                base.answer = Some(a);
                base.outcome = Outcome::Model { model, attempts };
                self.cache_put(&base);
                base
            }
            Err(e) => {
                tracing::info!(incident = %req.budget_key, reason = %e, "llm: falling back to the deterministic explanation");
                base.outcome = Outcome::Fallback {
                    reason: e.to_string(),
                };
                base
            }
        }
    }

    fn cache_get(&self, key: &str) -> Option<Explanation> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.map.get(key).map(|e| Explanation {
            cached: true,
            usage: Usage::default(),
            ..e.clone()
        })
    }

    // Only model answers are cached: a fallback after a transient failure should be retried
    // next time, and the budget bounds what retrying costs.
    fn cache_put(&self, e: &Explanation) {
        if self.config.cache_size == 0 {
            return;
        }
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.map.insert(e.fingerprint.clone(), e.clone()).is_none() {
            cache.order.push_back(e.fingerprint.clone());
        }
        while cache.order.len() > self.config.cache_size {
            if let Some(old) = cache.order.pop_front() {
                cache.map.remove(&old);
            }
        }
    }

    /// Refuses a call whose estimated cost would cross the incident's budget.
    fn charge_estimate(
        &self,
        key: &str,
        system: &str,
        messages: &[Message],
        llm: &LlmClient,
    ) -> Result<()> {
        let b = &llm.config().budget;
        let input = estimate_tokens(system)
            + messages
                .iter()
                .map(|m| estimate_tokens(&m.content))
                .sum::<u64>();
        let output = u64::from(llm.config().max_tokens);
        let spent = self
            .spent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .copied()
            .unwrap_or_default();
        let tokens = spent.input_tokens + spent.output_tokens + input + output;
        if tokens > b.max_tokens {
            return Err(Error::Budget(format!(
                "incident {key}: about {tokens} tokens would exceed the cap of {}",
                b.max_tokens
            )));
        }
        let cost = spent.cost + b.cost(input, output);
        if cost > b.max_cost {
            return Err(Error::Budget(format!(
                "incident {key}: about ${cost:.4} would exceed the cap of ${:.4}",
                b.max_cost
            )));
        }
        Ok(())
    }

    fn charge(&self, key: &str, input: u64, output: u64, llm: &LlmClient) -> Usage {
        let u = Usage {
            input_tokens: input,
            output_tokens: output,
            cost: llm.config().budget.cost(input, output),
        };
        let mut spent = self.spent.lock().unwrap_or_else(|p| p.into_inner());
        let s = spent.entry(key.to_owned()).or_default();
        s.input_tokens += u.input_tokens;
        s.output_tokens += u.output_tokens;
        s.cost += u.cost;
        while spent.len() > self.config.budget_entries.max(1) {
            spent.pop_first();
        }
        u
    }

    /// What has been spent on incident `id` so far.
    pub fn spent(&self, id: &str) -> Usage {
        self.spent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .copied()
            .unwrap_or_default()
    }
}
