//! Runbooks: operator-written steps and links matched to incidents, and their actions.
//!
//! A catalogue is YAML:
//!
//! ```yaml
//! entries:
//!   - name: api-latency
//!     match:
//!       labels: { namespace: "shop", __name__: "http_request_duration*" }
//!       reasons: [level_shift, drift]
//!     steps: ["Check the last deploy of api", "Compare p99 with the database's"]
//!     links: [{ title: "Dashboard", url: "https://grafana.example/d/api" }]
//!     action: { webhook: rollback-api, automatic: false, payload: { service: api } }
//! ```
//!
//! Label patterns are exact values or globs (`*` matches any run of characters); a leading
//! `!` negates. An entry matches an incident when one of its series matches every label
//! pattern and, if `reasons` is given, has one of them; an entry with no `match` matches every
//! incident. Unknown keys are errors, and every error names its entry.
//!
//! **Actions.** An entry's action is a call to a webhook the operator configured by name.
//! [`ActionRunner`] runs it only when the entry says `automatic: true` *and* the webhook is
//! configured *and* the runner is live; it is dry-run by default and then records the exact
//! body it would have sent. The body comes from the catalogue and the incident's ID, never from
//! a model's answer, so no text a model writes (or a log line persuades it to write) is ever
//! executed. Each entry acts at most once per incident.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use portent_core::Reason;
use portent_incidents::EvidencePack;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::labels;
use crate::secret::Secret;

/// A link in a runbook entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    /// What it is.
    pub title: String,
    /// Where.
    pub url: String,
}

/// When an entry applies.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// Label name → pattern; see the [module docs](self).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Anomaly reasons, any of which matches; empty for any.
    #[serde(default)]
    pub reasons: Vec<Reason>,
}

/// An entry's action: a configured webhook to call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    /// The webhook's configured name.
    pub webhook: String,
    /// Run without asking (default false: suggested only).
    #[serde(default)]
    pub automatic: bool,
    /// Extra JSON sent as `payload`.
    #[serde(default)]
    pub payload: serde_json::Value,
}

/// One runbook entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Its unique name.
    pub name: String,
    /// When it applies.
    #[serde(default, rename = "match")]
    pub matcher: Match,
    /// What to do, in order.
    #[serde(default)]
    pub steps: Vec<String>,
    /// Where to read more.
    #[serde(default)]
    pub links: Vec<Link>,
    /// What can be run.
    #[serde(default)]
    pub action: Option<Action>,
}

/// An entry that matched an incident.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunbookMatch {
    /// The entry's name.
    pub entry: String,
    /// The series it matched.
    pub evidence_ids: Vec<String>,
    /// Its steps.
    pub steps: Vec<String>,
    /// Its links.
    pub links: Vec<Link>,
    /// Its action.
    pub action: Option<Action>,
}

/// Whether `text` matches glob `pat` (`*` only).
fn glob(pat: &str, text: &str) -> bool {
    let parts: Vec<&str> = pat.split('*').collect();
    if parts.len() == 1 {
        return pat == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for p in &parts[1..parts.len() - 1] {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    true
}

fn pattern(pat: &str, value: Option<&str>) -> bool {
    match pat.strip_prefix('!') {
        Some(p) => !value.is_some_and(|v| glob(p, v)),
        None => value.is_some_and(|v| glob(pat, v)),
    }
}

/// A series' evidence ID, labels and reason, for matching.
type SeriesLabels<'a> = (&'a str, Vec<(String, String)>, Option<Reason>);

/// A validated runbook catalogue.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Catalogue {
    entries: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalogue {
    #[serde(default)]
    entries: Vec<Entry>,
}

/// "entry N (name)" for the list item of `entries` that holds 1-based `line` of `text`.
fn entry_at(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.iter().position(|l| l.trim_end() == "entries:")?;
    let mut indent = None;
    let mut item: Option<(usize, usize)> = None; // (index, first line)
    let mut count = 0;
    for (i, l) in lines
        .iter()
        .enumerate()
        .take(line.min(lines.len()))
        .skip(start + 1)
    {
        let trimmed = l.trim_start();
        let ind = l.len() - trimmed.len();
        if trimmed.starts_with("- ") && indent.is_none_or(|x| x == ind) {
            indent = Some(ind);
            count += 1;
            item = Some((count, i));
        }
    }
    let (n, first) = item?;
    let ind = indent.unwrap_or(0);
    let name = lines[first..]
        .iter()
        .enumerate()
        .take_while(|(k, l)| {
            *k == 0 || !l.trim_start().starts_with("- ") || l.len() - l.trim_start().len() != ind
        })
        .find_map(|(_, l)| {
            let t = l.trim_start().trim_start_matches("- ");
            t.strip_prefix("name:")
                .map(|v| v.trim().trim_matches(['"', '\'']).to_owned())
        });
    Some(match name {
        Some(name) => format!("entry {n} ({name})"),
        None => format!("entry {n}"),
    })
}

impl Catalogue {
    /// The catalogue in YAML `text`; see the [module docs](self).
    pub fn from_yaml(text: &str) -> Result<Self> {
        let raw: RawCatalogue = serde_saphyr::from_str(text).map_err(|e| {
            // Name the entry the error is in, so a long catalogue's error is easy to find.
            let at = e
                .location()
                .and_then(|l| entry_at(text, usize::try_from(l.line()).unwrap_or(usize::MAX)));
            match at {
                Some(at) => Error::Runbook(format!("{at}: {e}")),
                None => Error::Runbook(e.to_string()),
            }
        })?;
        let mut entries = Vec::with_capacity(raw.entries.len());
        let mut names = BTreeSet::new();
        for (i, e) in raw.entries.into_iter().enumerate() {
            let label = format!("entry {} ({})", i + 1, e.name);
            if e.name.trim().is_empty() {
                return Err(Error::Runbook(format!("{label}: name is empty")));
            }
            if !names.insert(e.name.clone()) {
                return Err(Error::Runbook(format!("{label}: name used twice")));
            }
            if e.steps.is_empty() && e.links.is_empty() {
                return Err(Error::Runbook(format!("{label}: needs steps or links")));
            }
            if let Some(a) = &e.action
                && a.webhook.trim().is_empty()
            {
                return Err(Error::Runbook(format!("{label}: action.webhook is empty")));
            }
            entries.push(e);
        }
        Ok(Self { entries })
    }

    /// The catalogue in file `path`.
    pub fn load(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Runbook(format!("{}: {e}", path.display())))?;
        Self::from_yaml(&text).map_err(|e| Error::Runbook(format!("{}: {e}", path.display())))
    }

    /// Its entries.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The entries matching `pack`, in catalogue order, each with the series it matched.
    pub fn matches(&self, pack: &EvidencePack) -> Vec<RunbookMatch> {
        let series: Vec<SeriesLabels<'_>> = pack
            .series
            .iter()
            .map(|s| (s.id.as_str(), labels::parse(&s.series), s.reason))
            .chain(
                pack.correlated
                    .iter()
                    .map(|s| (s.id.as_str(), labels::parse(&s.series), s.reason)),
            )
            .collect();
        self.entries
            .iter()
            .filter_map(|e| {
                let m = &e.matcher;
                let ids: Vec<String> = series
                    .iter()
                    .filter(|(_, l, reason)| {
                        let get = |k: &str| l.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
                        m.labels.iter().all(|(k, pat)| pattern(pat, get(k)))
                            && (m.reasons.is_empty()
                                || reason.is_some_and(|r| m.reasons.contains(&r)))
                    })
                    .map(|(id, _, _)| (*id).to_owned())
                    .collect();
                let catch_all = m.labels.is_empty() && m.reasons.is_empty();
                (catch_all || !ids.is_empty()).then(|| RunbookMatch {
                    entry: e.name.clone(),
                    evidence_ids: ids,
                    steps: e.steps.clone(),
                    links: e.links.clone(),
                    action: e.action.clone(),
                })
            })
            .collect()
    }
}

/// The runbook part of an explanation's text.
pub fn render(matches: &[RunbookMatch]) -> String {
    let mut out = String::new();
    if matches.is_empty() {
        return out;
    }
    out.push_str("Runbooks:\n");
    for m in matches {
        out.push_str(&format!("* {}", m.entry));
        if !m.evidence_ids.is_empty() {
            out.push_str(&format!(" (for {})", m.evidence_ids.join(", ")));
        }
        out.push('\n');
        for (i, s) in m.steps.iter().enumerate() {
            out.push_str(&format!("  {}. {s}\n", i + 1));
        }
        for l in &m.links {
            out.push_str(&format!("  - {}: {}\n", l.title, l.url));
        }
        if let Some(a) = &m.action {
            let how = if a.automatic { "automatic" } else { "manual" };
            out.push_str(&format!("  action: webhook {} ({how})\n", a.webhook));
        }
    }
    out
}

/// A webhook actions may call.
#[derive(Clone, Debug)]
pub struct Webhook {
    /// Where to POST.
    pub url: String,
    /// A bearer token.
    pub bearer: Option<Secret>,
}

/// What happened to one matched entry's action.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ActionStatus {
    /// Not marked automatic: shown to humans only.
    Suggested,
    /// Marked automatic, but its webhook is not configured: nothing was sent.
    UnknownWebhook,
    /// Already run for this incident.
    AlreadyRun,
    /// Dry-run: this is what would have been sent.
    DryRun {
        /// The body.
        would_send: serde_json::Value,
    },
    /// Sent; the webhook answered with this status.
    Sent {
        /// The HTTP status.
        code: u16,
    },
    /// Sending failed.
    Failed {
        /// Why.
        error: String,
    },
}

/// The outcome of one action.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionOutcome {
    /// The entry.
    pub entry: String,
    /// The webhook it targets.
    pub webhook: String,
    /// What happened.
    #[serde(flatten)]
    pub status: ActionStatus,
}

/// Runs matched entries' actions; see the [module docs](self).
#[derive(Debug)]
pub struct ActionRunner {
    http: reqwest::Client,
    webhooks: BTreeMap<String, Webhook>,
    live: bool,
    done: Mutex<BTreeSet<(String, String)>>,
}

/// Incidents × entries remembered as run; beyond it the oldest-sorted are forgotten.
const MAX_DONE: usize = 10_000;

impl ActionRunner {
    /// A dry-run runner over the configured `webhooks`.
    pub fn new(webhooks: BTreeMap<String, Webhook>) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::Config(format!("webhooks: {e}")))?;
        Ok(Self {
            http,
            webhooks,
            live: false,
            done: Mutex::new(BTreeSet::new()),
        })
    }

    /// Sends for real when `live`; dry-run otherwise (the default).
    pub fn live(mut self, live: bool) -> Self {
        self.live = live;
        self
    }

    /// The body an action sends: the entry, the incident and its evidence, and the entry's
    /// own payload. Nothing in it comes from a model.
    pub fn body(incident_id: &str, m: &RunbookMatch, a: &Action) -> serde_json::Value {
        serde_json::json!({
            "runbook": m.entry,
            "incident": incident_id,
            "evidence_ids": m.evidence_ids,
            "payload": a.payload,
        })
    }

    /// Runs (or dry-runs) the actions of `matches` for incident `incident_id`.
    pub async fn run(&self, incident_id: &str, matches: &[RunbookMatch]) -> Vec<ActionOutcome> {
        let mut out = Vec::new();
        for m in matches {
            let Some(a) = &m.action else { continue };
            let outcome = |status| ActionOutcome {
                entry: m.entry.clone(),
                webhook: a.webhook.clone(),
                status,
            };
            if !a.automatic {
                out.push(outcome(ActionStatus::Suggested));
                continue;
            }
            let Some(hook) = self.webhooks.get(&a.webhook) else {
                out.push(outcome(ActionStatus::UnknownWebhook));
                continue;
            };
            let body = Self::body(incident_id, m, a);
            if !self.live {
                out.push(outcome(ActionStatus::DryRun { would_send: body }));
                continue;
            }
            let key = (incident_id.to_owned(), m.entry.clone());
            {
                let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
                if !done.insert(key) {
                    out.push(outcome(ActionStatus::AlreadyRun));
                    continue;
                }
                while done.len() > MAX_DONE {
                    done.pop_first();
                }
            }
            let mut req = self.http.post(&hook.url).json(&body);
            if let Some(b) = &hook.bearer {
                req = req.bearer_auth(b.expose());
            }
            let status = match req.send().await {
                Ok(r) => ActionStatus::Sent {
                    code: r.status().as_u16(),
                },
                Err(e) => ActionStatus::Failed {
                    error: e.without_url().to_string(),
                },
            };
            tracing::info!(entry = %m.entry, webhook = %a.webhook, incident = %incident_id, ?status, "runbook action");
            out.push(outcome(status));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("shop", "shop"));
        assert!(!glob("shop", "shops"));
        assert!(glob("api-*", "api-7d9f8-xk2p"));
        assert!(glob("*latency*", "http_latency_seconds"));
        assert!(glob("a*b*c", "aXbYc"));
        assert!(!glob("a*b*c", "acb"));
        assert!(!glob("ab*ba", "aba"));
        assert!(pattern("!kube-*", Some("shop")));
        assert!(pattern("!kube-*", None));
        assert!(!pattern("shop", None));
    }

    #[test]
    fn errors_name_the_entry() {
        let err = |y: &str| {
            Catalogue::from_yaml(y)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        let e = err("entries:\n  - name: a\n    steps: [x]\n  - name: b\n    stepz: [x]\n");
        assert!(e.starts_with("runbooks: entry 2 (b): "), "{e}");
        assert!(e.contains("unknown field `stepz`"), "{e}");
        let e = err("entries:\n  - name: a\n    steps: [x]\n    match: { reasons: [bogus] }\n");
        assert!(e.starts_with("runbooks: entry 1 (a): "), "{e}");
        assert!(e.contains("unknown variant `bogus`"), "{e}");
        let e = err("entries:\n  - steps: [x]\n    name: \"z\"\n    links: 3\n");
        assert!(e.starts_with("runbooks: entry 1 (z): "), "{e}");
        assert_eq!(
            err("entries:\n  - name: a\n    steps: [x]\n  - name: a\n    steps: [y]\n"),
            "runbooks: entry 2 (a): name used twice"
        );
        assert_eq!(
            err("entries:\n  - name: a\n"),
            "runbooks: entry 1 (a): needs steps or links"
        );
        assert!(err("entriez: []\n").contains("unknown field"));
    }
}
