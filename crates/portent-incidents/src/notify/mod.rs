//! Notifications: Alertmanager (API v2), Slack (incoming webhook, Block Kit) and generic JSON
//! webhooks, behind one state machine.
//!
//! The [`Notifier`] is ticked with the current evidence packs and the time. For every
//! (sink, incident) pair it remembers the last state it delivered. When the incident's state
//! differs (pending is never announced), it sends one notification; a failed send is retried
//! at the next tick after an exponential backoff (`backoff_base · 2^(attempts−1)`, at most
//! `backoff_max`), never re-created, so a sink sees exactly one successful notification per
//! state change. If an incident moves on while a send is failing (firing → resolved), only the
//! newest state is delivered.
//!
//! Alertmanager additionally expects a firing alert to be re-posted periodically, with
//! `endsAt` in the future, or it resolves the alert by itself; those refreshes
//! ([`AlertmanagerConfig::resend_every`]) are not state changes and Alertmanager deduplicates
//! them by the alert's labels, which stay fixed for the incident's life.
//!
//! The notifier's memory is per process: after a restart, firing incidents are announced again
//! (harmless for Alertmanager, a repeat for Slack and webhooks).
//!
//! **Explanations written elsewhere.** This crate only knows the deterministic text
//! ([`EvidencePack::explain`]). [`Notifier::tick_explained`] takes [`Explanations`] made
//! outside it (an LLM's answer, runbooks, events and logs, by `portent-explain`): their text
//! replaces the deterministic one, their annotations are added to the Alertmanager alert, and
//! incidents listed in [`Explanations::hold`] have their state changes held back for this
//! tick (refreshes still go), so that a caller can wait a bounded time for an explanation
//! instead of notifying twice.

mod alertmanager;
mod slack;
mod webhook;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use portent_core::Timestamp;

pub use alertmanager::{
    ALERTNAME, AlertmanagerConfig, Matcher, Silence, SilenceStatus, alert_labels, alert_payload,
};
pub use slack::{SlackConfig, chart_link, slack_payload};
pub use webhook::{WebhookConfig, webhook_payload};

use crate::correlate::State;
use crate::pack::EvidencePack;

/// A notification could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The sink answered with a non-success status.
    #[error("{sink}: HTTP {status}: {body}")]
    Status {
        /// Which sink.
        sink: String,
        /// The status code.
        status: u16,
        /// The start of the answer's body.
        body: String,
    },
    /// The request did not get an answer (connection, timeout, TLS).
    #[error("{sink}: {source}")]
    Transport {
        /// Which sink.
        sink: String,
        /// The cause (without the URL, which may hold a secret).
        #[source]
        source: reqwest::Error,
    },
    /// The answer could not be read (for reads such as silences).
    #[error("{sink}: bad answer: {message}")]
    Decode {
        /// Which sink.
        sink: String,
        /// What was wrong.
        message: String,
    },
    /// A header name or value in the configuration is not valid HTTP.
    #[error("{sink}: header {name:?}: not a valid HTTP header")]
    Header {
        /// Which sink.
        sink: String,
        /// The header name.
        name: String,
    },
}

/// What is being announced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The incident's state changed to the pack's state.
    Change,
    /// An Alertmanager refresh of a firing alert.
    Refresh,
}

/// An explanation of one incident made outside this crate.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Explained {
    /// The text for humans; replaces the deterministic explanation everywhere.
    pub text: String,
    /// Alertmanager annotations laid over portent's own (`summary`, `description`,
    /// `likely_cause`, …).
    pub annotations: BTreeMap<String, String>,
    /// Structured detail, sent as the webhook body's `explained`.
    pub detail: Option<serde_json::Value>,
}

/// Explanations for one [`Notifier::tick_explained`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Explanations {
    /// By incident ID; incidents missing here get the deterministic text.
    pub by_incident: BTreeMap<String, Explained>,
    /// Incidents whose state changes wait (their explanation is on its way); their refreshes
    /// are still sent.
    pub hold: BTreeSet<String>,
}

/// One message about one incident.
#[derive(Clone, Copy, Debug)]
pub struct Notification<'a> {
    /// The evidence.
    pub pack: &'a EvidencePack,
    /// Its plain-text explanation.
    pub explanation: &'a str,
    /// The explanation made outside this crate, if any (its text is `explanation`).
    pub explained: Option<&'a Explained>,
    /// The time of sending.
    pub now: Timestamp,
    /// Change or refresh.
    pub kind: Kind,
}

/// Where notifications go.
#[derive(Clone, Debug)]
pub enum Sink {
    /// Alertmanager's API v2.
    Alertmanager(AlertmanagerConfig),
    /// A Slack incoming webhook.
    Slack(SlackConfig),
    /// A generic JSON webhook.
    Webhook(WebhookConfig),
}

impl Sink {
    /// A name for logs and errors: the kind and the URL's host.
    pub fn name(&self) -> String {
        let (kind, url) = match self {
            Sink::Alertmanager(c) => ("alertmanager", &c.url),
            Sink::Slack(c) => ("slack", &c.url),
            Sink::Webhook(c) => ("webhook", &c.url),
        };
        sink_name(kind, url)
    }

    /// Sends one notification (one attempt).
    pub async fn send(
        &self,
        client: &reqwest::Client,
        n: &Notification<'_>,
    ) -> Result<(), NotifyError> {
        let name = self.name();
        let (url, body, headers, bearer) = match self {
            Sink::Alertmanager(c) => (
                format!("{}/api/v2/alerts", c.url.trim_end_matches('/')),
                alert_payload(c, n),
                &c.headers,
                c.bearer.as_deref(),
            ),
            Sink::Slack(c) => (c.url.clone(), slack_payload(c, n), &Vec::new(), None),
            Sink::Webhook(c) => (
                c.url.clone(),
                webhook_payload(n),
                &c.headers,
                c.bearer.as_deref(),
            ),
        };
        let mut req = client.post(&url).json(&body);
        req = with_headers(req, &name, headers, bearer)?;
        let resp = req.send().await.map_err(|source| NotifyError::Transport {
            sink: name.clone(),
            source: source.without_url(),
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let text = resp.text().await.unwrap_or_default();
        Err(NotifyError::Status {
            sink: name,
            status: status.as_u16(),
            body: text.chars().take(512).collect(),
        })
    }
}

/// `kind:host`: enough to tell sinks apart in logs without the URL's path, which for Slack
/// is the secret.
pub(crate) fn sink_name(kind: &str, url: &str) -> String {
    let host = reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    format!("{kind}:{host}")
}

pub(crate) fn with_headers(
    mut req: reqwest::RequestBuilder,
    sink: &str,
    headers: &[(String, String)],
    bearer: Option<&str>,
) -> Result<reqwest::RequestBuilder, NotifyError> {
    for (k, v) in headers {
        let name = reqwest::header::HeaderName::from_bytes(k.as_bytes());
        let value = reqwest::header::HeaderValue::from_str(v);
        let (Ok(name), Ok(value)) = (name, value) else {
            return Err(NotifyError::Header {
                sink: sink.to_owned(),
                name: k.clone(),
            });
        };
        req = req.header(name, value);
    }
    if let Some(token) = bearer {
        req = req.bearer_auth(token);
    }
    Ok(req)
}

/// Retry and timeout settings of the notifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotifierConfig {
    /// The first retry's delay (default 1 s).
    pub backoff_base: Duration,
    /// The longest retry delay (default 5 min).
    pub backoff_max: Duration,
    /// One attempt's timeout (default 10 s).
    pub timeout: Duration,
}

impl Default for NotifierConfig {
    fn default() -> Self {
        Self {
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Clone, Debug, Default)]
struct Delivery {
    delivered: Option<State>,
    attempts: u32,
    next_try: Option<Timestamp>,
    last_sent: Option<Timestamp>,
}

/// What one tick did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TickReport {
    /// State changes delivered: (sink index, incident ID, state).
    pub delivered: Vec<(usize, String, State)>,
    /// Alertmanager refreshes delivered: (sink index, incident ID).
    pub refreshed: Vec<(usize, String)>,
    /// Failed attempts: (sink index, incident ID, error text).
    pub failed: Vec<(usize, String, String)>,
}

/// Totals since start, for self-metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NotifierCounters {
    /// State changes delivered.
    pub delivered: u64,
    /// Refreshes delivered.
    pub refreshed: u64,
    /// Failed attempts.
    pub failed: u64,
}

/// The state machine that delivers each state change once per sink; see the
/// [module docs](self).
#[derive(Debug)]
pub struct Notifier {
    client: reqwest::Client,
    sinks: Vec<Sink>,
    config: NotifierConfig,
    deliveries: BTreeMap<(usize, String), Delivery>,
    counters: NotifierCounters,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The delay before retry number `attempts` (1-based): `base · 2^(attempts−1)`, capped.
fn backoff(config: &NotifierConfig, attempts: u32) -> i64 {
    let base = millis(config.backoff_base).max(1);
    let factor = 1i64 << attempts.saturating_sub(1).min(30);
    base.saturating_mul(factor).min(millis(config.backoff_max))
}

impl Notifier {
    /// A notifier for `sinks`.
    pub fn new(sinks: Vec<Sink>, config: NotifierConfig) -> Result<Self, NotifyError> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|source| NotifyError::Transport {
                sink: "client".into(),
                source: source.without_url(),
            })?;
        Ok(Self {
            client,
            sinks,
            config,
            deliveries: BTreeMap::new(),
            counters: NotifierCounters::default(),
        })
    }

    /// The sinks.
    pub fn sinks(&self) -> &[Sink] {
        &self.sinks
    }

    /// Totals since start.
    pub fn counters(&self) -> NotifierCounters {
        self.counters
    }

    /// The state last delivered to sink `sink` for `incident`.
    pub fn delivered(&self, sink: usize, incident: &str) -> Option<State> {
        self.deliveries
            .get(&(sink, incident.to_owned()))
            .and_then(|d| d.delivered)
    }

    /// Delivers what is due at `now` for the incidents in `packs` (the current ones; those no
    /// longer present are forgotten), with the deterministic explanations.
    pub async fn tick(&mut self, packs: &[EvidencePack], now: Timestamp) -> TickReport {
        self.tick_explained(packs, now, &Explanations::default())
            .await
    }

    /// [`Notifier::tick`] with explanations made elsewhere; see the [module docs](self).
    pub async fn tick_explained(
        &mut self,
        packs: &[EvidencePack],
        now: Timestamp,
        explanations: &Explanations,
    ) -> TickReport {
        let mut report = TickReport::default();
        let live: BTreeSet<&str> = packs.iter().map(|p| p.incident.id.as_str()).collect();
        self.deliveries
            .retain(|(_, id), _| live.contains(id.as_str()));
        for pack in packs {
            let state = pack.incident.state;
            if state == State::Pending {
                continue;
            }
            let explained = explanations.by_incident.get(&pack.incident.id);
            let held = explanations.hold.contains(&pack.incident.id);
            let explanation = match explained {
                Some(e) => e.text.clone(),
                None => pack.explain(),
            };
            for (si, sink) in self.sinks.iter().enumerate() {
                let key = (si, pack.incident.id.clone());
                let d = self.deliveries.entry(key).or_default();
                let kind = if d.delivered == Some(state) {
                    let refresh_due = match sink {
                        Sink::Alertmanager(c) if state == State::Firing => d
                            .last_sent
                            .is_none_or(|t| now.millis_since(t) >= millis(c.resend_every)),
                        _ => false,
                    };
                    if !refresh_due {
                        continue;
                    }
                    Kind::Refresh
                } else {
                    if held || d.next_try.is_some_and(|t| now < t) {
                        continue;
                    }
                    Kind::Change
                };
                let n = Notification {
                    pack,
                    explanation: &explanation,
                    explained,
                    now,
                    kind,
                };
                match sink.send(&self.client, &n).await {
                    Ok(()) => {
                        d.last_sent = Some(now);
                        match kind {
                            Kind::Change => {
                                d.delivered = Some(state);
                                d.attempts = 0;
                                d.next_try = None;
                                self.counters.delivered += 1;
                                report.delivered.push((si, pack.incident.id.clone(), state));
                            }
                            Kind::Refresh => {
                                self.counters.refreshed += 1;
                                report.refreshed.push((si, pack.incident.id.clone()));
                            }
                        }
                    }
                    Err(e) => {
                        self.counters.failed += 1;
                        report
                            .failed
                            .push((si, pack.incident.id.clone(), e.to_string()));
                        if kind == Kind::Change {
                            d.attempts = d.attempts.saturating_add(1);
                            d.next_try = Some(now.add_millis(backoff(&self.config, d.attempts)));
                        } else {
                            // A failed refresh is tried again at the next tick.
                            d.last_sent = None;
                        }
                    }
                }
            }
        }
        report
    }
}
