//! Ask: answer a question from the current incidents and top scores.
//!
//! [`answer_deterministic`] lists what is open, worst first: firing before pending, then by the
//! top series' score; recently resolved incidents are counted, not listed. When the question
//! names something an incident involves (a namespace, workload, service, node or pod, or a
//! word such as `production` in one of them), only those incidents are listed.
//! [`Explainer::ask`] sends the same material to the model with the same validation and
//! fallback as explanations.

use std::collections::BTreeSet;

use portent_core::Reason;
use portent_incidents::EvidencePack;
use portent_incidents::State;
use portent_incidents::pack::actual_vs_expected;
use serde::{Deserialize, Serialize};

use crate::explain::{Explainer, Explanation, Outcome, Request, Usage};
use crate::prompt;
use crate::pseudo::Pseudonymiser;

/// One of the current top scores.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopScore {
    /// The series in Prometheus notation.
    pub series: String,
    /// Its latest score.
    pub score: f64,
    /// Its reason.
    pub reason: Option<Reason>,
}

/// Incidents listed in an answer, and top scores.
pub const MAX_LISTED: usize = 5;

fn state_rank(s: State) -> u8 {
    match s {
        State::Firing => 0,
        State::Pending => 1,
        _ => 2,
    }
}

fn top_score(p: &EvidencePack) -> f64 {
    p.series.first().map_or(0.0, |s| s.max_score)
}

fn names(p: &EvidencePack) -> impl Iterator<Item = &String> {
    let s = &p.scope;
    s.namespaces
        .iter()
        .chain(&s.workloads)
        .chain(&s.services)
        .chain(&s.nodes)
        .chain(&s.pods)
}

/// Whether question word `w` names `name`: the whole name, or one of its `-`/`.`/`_` parts,
/// or starts with a part of four letters or more (`production` names `payments-prod`).
fn names_it(name: &str, w: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n == w
        || n.split(['-', '.', '_'])
            .any(|part| part == w || (part.len() >= 4 && w.starts_with(part)))
}

/// The words of `question` that name something in one of `packs`.
fn focus(question: &str, packs: &[&EvidencePack]) -> BTreeSet<String> {
    let words: BTreeSet<String> = question
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
        .map(|w| w.trim_matches('.').to_ascii_lowercase())
        .filter(|w| w.len() >= 3)
        .collect();
    words
        .into_iter()
        .filter(|w| packs.iter().any(|p| names(p).any(|n| names_it(n, w))))
        .collect()
}

/// Open incidents, worst first, restricted to the question's focus if it has one.
fn open<'a>(
    question: &str,
    packs: &'a [EvidencePack],
) -> (Vec<&'a EvidencePack>, BTreeSet<String>) {
    let mut open: Vec<&EvidencePack> = packs
        .iter()
        .filter(|p| matches!(p.incident.state, State::Firing | State::Pending))
        .collect();
    let focus = focus(question, &open);
    if !focus.is_empty() {
        open.retain(|p| names(p).any(|n| focus.iter().any(|w| names_it(n, w))));
    }
    open.sort_by(|a, b| {
        state_rank(a.incident.state)
            .cmp(&state_rank(b.incident.state))
            .then(top_score(b).total_cmp(&top_score(a)))
            .then_with(|| a.incident.id.cmp(&b.incident.id))
    });
    (open, focus)
}

/// The deterministic answer: what is open, worst first, and the top scores.
pub fn answer_deterministic(question: &str, packs: &[EvidencePack], scores: &[TopScore]) -> String {
    let (open, focus) = open(question, packs);
    let resolved = packs
        .iter()
        .filter(|p| p.incident.state == State::Resolved)
        .count();
    let mut out = String::new();
    if open.is_empty() {
        out.push_str("No open incidents");
        if !focus.is_empty() {
            out.push_str(&format!(
                " involving {}",
                focus.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        out.push_str(".\n");
    } else {
        out.push_str(&format!("{} open incident(s)", open.len()));
        if !focus.is_empty() {
            out.push_str(&format!(
                " involving {}",
                focus.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        out.push_str(", worst first:\n");
        for (i, p) in open.iter().take(MAX_LISTED).enumerate() {
            let inc = &p.incident;
            out.push_str(&format!(
                "{}. {} {} since {}, {} series",
                i + 1,
                inc.id,
                inc.state,
                inc.started_at.iso,
                inc.series_total
            ));
            if let Some(ns) = p.scope.namespaces.first() {
                out.push_str(&format!(", namespace {ns}"));
            }
            if let Some(top) = p.series.first() {
                out.push_str(&format!(
                    ": {} {} ({})",
                    top.series,
                    top.reason.map_or("anomalous", |r| r.as_str()),
                    actual_vs_expected(&top.peak)
                ));
            }
            out.push_str(".\n");
        }
        if open.len() > MAX_LISTED {
            out.push_str(&format!("… and {} more.\n", open.len() - MAX_LISTED));
        }
    }
    if resolved > 0 {
        out.push_str(&format!("{resolved} recently resolved.\n"));
    }
    let mut top: Vec<&TopScore> = scores.iter().filter(|s| s.score.is_finite()).collect();
    top.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.series.cmp(&b.series))
    });
    if !top.is_empty() {
        out.push_str("Top scores now:\n");
        for s in top.iter().take(MAX_LISTED) {
            out.push_str(&format!(
                "* {} {:.2}{}\n",
                s.series,
                s.score,
                s.reason.map(|r| format!(" ({r})")).unwrap_or_default()
            ));
        }
    }
    out
}

impl Explainer {
    /// The answer to `question` from `packs` (current incidents) and `scores` (current top
    /// scores): the model's validated answer when one is configured, else (or on failure)
    /// [`answer_deterministic`].
    pub async fn ask(
        &self,
        question: &str,
        packs: &[EvidencePack],
        scores: &[TopScore],
    ) -> Explanation {
        let text = answer_deterministic(question, packs, scores);
        let (open, _) = open(question, packs);
        let open: Vec<&EvidencePack> = open.into_iter().take(MAX_LISTED).collect();
        let mut top: Vec<&TopScore> = scores.iter().filter(|s| s.score.is_finite()).collect();
        top.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| a.series.cmp(&b.series))
        });
        top.truncate(10);

        let mut known = BTreeSet::new();
        let mut user = String::from("Question (from an engineer; answer it):\n");
        user.push_str(&prompt::untrusted_block("question", &[question]));
        user.push_str(
            "\nOpen incidents, worst first (evidence IDs are qualified as <incident>/<id>):\n",
        );
        let mut pseudo = Pseudonymiser::new();
        for p in &open {
            known.insert(p.incident.id.clone());
            for id in crate::explain::known_ids(p) {
                known.insert(format!("{}/{id}", p.incident.id));
            }
            pseudo.learn_pack(p);
            let mut trusted = (*p).clone();
            trusted.kubernetes_events.clear();
            trusted.logs.clear();
            user.push_str(&prompt::escaped_json(&trusted));
            user.push('\n');
            user.push_str(&prompt::untrusted_block(
                &format!("{} kubernetes-events", p.incident.id),
                &p.kubernetes_events,
            ));
            user.push_str(&prompt::untrusted_block(
                &format!("{} logs", p.incident.id),
                &p.logs,
            ));
        }
        user.push_str("\nTop anomaly scores now (IDs s1, s2, …):\n");
        for (i, s) in top.iter().enumerate() {
            let id = format!("s{}", i + 1);
            for (k, v) in crate::labels::parse(&s.series) {
                pseudo.learn_label(&k, &v);
            }
            user.push_str(&prompt::escaped_json(&serde_json::json!({
                "id": id, "series": s.series, "score": s.score, "reason": s.reason,
            })));
            user.push('\n');
            known.insert(id);
        }
        pseudo.learn_ips(&user);
        user.push_str("\nAnswer with the JSON object only.");
        let fingerprint = self.fingerprint(&["ask", &user]);
        let base = Explanation {
            incident_id: "ask".into(),
            fingerprint: fingerprint.clone(),
            text,
            outcome: Outcome::Deterministic,
            answer: None,
            runbooks: Vec::new(),
            usage: Usage::default(),
            cached: false,
        };
        if known.is_empty() {
            // Nothing to cite: the model could only be wrong, and the deterministic text
            // already says that all is quiet.
            return base;
        }
        // Budgeted per question and state: one shared pot would, once spent, turn every
        // later question deterministic for good.
        let budget_key = format!("ask-{}", &fingerprint[..16.min(fingerprint.len())]);
        let req = Request {
            budget_key: &budget_key,
            fingerprint,
            system: prompt::ASK_SYSTEM,
            user,
            known,
            pseudo: self.config_pseudonymise().then_some(pseudo),
        };
        self.with_model(base, req, "").await
    }
}
