//! Alertmanager API v2: one alert per incident (`POST /api/v2/alerts`), and reading silences
//! (`GET /api/v2/silences`) for feedback.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Notification, NotifyError, sink_name, with_headers};
use crate::correlate::State;
use crate::pack::{EvidencePack, rfc3339};

/// The `alertname` of every incident alert.
pub const ALERTNAME: &str = "PortentIncident";

/// Where and how to post alerts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertmanagerConfig {
    /// The base URL, e.g. `http://alertmanager:9093`.
    pub url: String,
    /// Extra labels on every alert, e.g. `severity="warning"` (default that one).
    pub labels: BTreeMap<String, String>,
    /// The `runbook_url` annotation; `{incident}` is replaced by the incident ID. Omitted when
    /// `None`.
    pub runbook_url: Option<String>,
    /// The `generatorURL`, e.g. portent's UI page of the incident; `{incident}` is replaced.
    pub generator_url: Option<String>,
    /// How often a firing alert is re-posted (default 1 min). `endsAt` is set 4 times this far
    /// ahead, as Prometheus does, so one or two lost posts do not resolve it.
    pub resend_every: Duration,
    /// Extra headers (e.g. a tenant header for Mimir's Alertmanager).
    pub headers: Vec<(String, String)>,
    /// A bearer token, if the Alertmanager sits behind an authenticating proxy.
    pub bearer: Option<String>,
}

impl AlertmanagerConfig {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            labels: BTreeMap::from([("severity".to_owned(), "warning".to_owned())]),
            runbook_url: None,
            generator_url: None,
            resend_every: Duration::from_secs(60),
            headers: Vec::new(),
            bearer: None,
        }
    }

    /// Lists the silences, as Alertmanager returns them.
    pub async fn silences(&self, client: &reqwest::Client) -> Result<Vec<Silence>, NotifyError> {
        let sink = sink_name("alertmanager", &self.url);
        let url = format!("{}/api/v2/silences", self.url.trim_end_matches('/'));
        let req = with_headers(
            client.get(url),
            &sink,
            &self.headers,
            self.bearer.as_deref(),
        )?;
        let resp = req.send().await.map_err(|source| NotifyError::Transport {
            sink: sink.clone(),
            source: source.without_url(),
        })?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|source| NotifyError::Transport {
                sink: sink.clone(),
                source: source.without_url(),
            })?;
        if !status.is_success() {
            return Err(NotifyError::Status {
                sink,
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body).chars().take(512).collect(),
            });
        }
        serde_json::from_slice(&body).map_err(|e| NotifyError::Decode {
            sink,
            message: e.to_string(),
        })
    }
}

/// An Alertmanager silence (the fields portent reads).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Silence {
    /// Its ID.
    pub id: String,
    /// Whether it is active.
    pub status: SilenceStatus,
    /// What it matches.
    pub matchers: Vec<Matcher>,
    /// Who made it.
    #[serde(default)]
    pub created_by: String,
    /// Why.
    #[serde(default)]
    pub comment: String,
    /// When it starts (RFC 3339).
    pub starts_at: String,
    /// When it ends (RFC 3339).
    pub ends_at: String,
}

/// A silence's status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SilenceStatus {
    /// `active`, `pending` or `expired`.
    pub state: String,
}

/// One label matcher of a silence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Matcher {
    /// The label name.
    pub name: String,
    /// The value or regular expression.
    pub value: String,
    /// Whether `value` is a regular expression.
    #[serde(default)]
    pub is_regex: bool,
    /// `=` (true) or `!=` (false); absent means `=`.
    #[serde(default = "yes")]
    pub is_equal: bool,
}

fn yes() -> bool {
    true
}

impl Silence {
    /// The exact-match value of label `name`, if the silence has an `=` matcher on it.
    pub fn equals(&self, name: &str) -> Option<&str> {
        self.matchers
            .iter()
            .find(|m| m.name == name && !m.is_regex && m.is_equal)
            .map(|m| m.value.as_str())
    }

    /// Whether it is active and aimed at portent's incident alerts.
    pub fn is_portent(&self) -> bool {
        self.status.state == "active" && self.equals("alertname") == Some(ALERTNAME)
    }
}

fn fill(template: &str, pack: &EvidencePack) -> String {
    template.replace("{incident}", &pack.incident.id)
}

/// The label set of an incident's alert: `alertname`, `incident`, the incident's origin
/// labels (namespace, service, deployment, node, pod of its first series), then the
/// configured extras. Fixed for the incident's life, so Alertmanager sees one alert.
pub fn alert_labels(config: &AlertmanagerConfig, pack: &EvidencePack) -> BTreeMap<String, String> {
    let mut labels = pack.incident.origin.clone();
    labels.extend(config.labels.clone());
    labels.insert("alertname".into(), ALERTNAME.into());
    labels.insert("incident".into(), pack.incident.id.clone());
    labels
}

/// The body of `POST /api/v2/alerts` for one notification: a one-element array.
pub fn alert_payload(config: &AlertmanagerConfig, n: &Notification<'_>) -> Value {
    let pack = n.pack;
    let inc = &pack.incident;
    let summary = match pack.series.first() {
        Some(top) => format!(
            "{} series anomalous, most likely cause {}",
            inc.series_total, top.series
        ),
        None => format!("{} series anomalous", inc.series_total),
    };
    let mut annotations = BTreeMap::from([
        ("summary".to_owned(), summary),
        ("description".to_owned(), n.explanation.to_owned()),
    ]);
    if let Some(e) = n.explained {
        annotations.extend(e.annotations.clone());
    }
    // The configured runbook URL wins over a runbook entry's first link: the operator set it
    // for every alert on purpose.
    if let Some(r) = &config.runbook_url {
        annotations.insert("runbook_url".into(), fill(r, pack));
    }
    let starts = inc.fired_at.as_ref().unwrap_or(&inc.started_at);
    let ends = match (inc.state, &inc.resolved_at) {
        (State::Resolved, Some(r)) => r.iso.clone(),
        _ => {
            let ahead = i64::try_from(config.resend_every.as_millis().saturating_mul(4))
                .unwrap_or(i64::MAX);
            rfc3339(n.now.add_millis(ahead))
        }
    };
    let mut alert = json!({
        "labels": alert_labels(config, pack),
        "annotations": annotations,
        "startsAt": starts.iso,
        "endsAt": ends,
    });
    if let (Some(g), Some(obj)) = (&config.generator_url, alert.as_object_mut()) {
        obj.insert("generatorURL".into(), Value::String(fill(g, pack)));
    }
    Value::Array(vec![alert])
}
