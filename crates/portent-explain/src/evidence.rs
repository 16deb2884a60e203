//! Extra evidence for a pack: Kubernetes events and Loki log lines.
//!
//! Both sources are optional and bounded in count, bytes and time: a slow or failing source
//! costs at most its timeout and yields no items, never a missing explanation. Items get
//! evidence IDs of their own (`k1`, … for events, `l1`, … for log lines) so an answer can cite
//! them next to the series' `e1`, …; [`attach`] puts them into the pack's
//! `kubernetes_events` and `logs` slots.
//!
//! Everything here is untrusted text written by workloads: the prompt quotes it as data
//! (see [`crate::prompt`]).

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams};
use portent_incidents::{EvidencePack, workload_of_pod};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::labels;
use crate::secret::Secret;

/// `s` cut to at most `max` bytes on a character boundary, with `…` when cut.
pub(crate) fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// One Kubernetes event about an object of the incident.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubeEvent {
    /// Its evidence ID (`k1`, …).
    pub id: String,
    /// The object's namespace.
    pub namespace: String,
    /// The object, as `Kind/name`.
    pub object: String,
    /// `Normal` or `Warning`.
    #[serde(rename = "type")]
    pub type_: String,
    /// The machine-readable reason (`BackOff`, `OOMKilling`, …).
    pub reason: String,
    /// The message, clipped.
    pub message: String,
    /// How many times it happened.
    pub count: i32,
    /// When it last happened (RFC 3339), if the API said.
    pub last_seen: Option<String>,
}

/// One log line from a pod of the incident.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Its evidence ID (`l1`, …).
    pub id: String,
    /// When (RFC 3339).
    pub at: String,
    /// The stream's namespace label.
    pub namespace: Option<String>,
    /// The stream's pod label.
    pub pod: Option<String>,
    /// The line, clipped.
    pub line: String,
}

/// Puts `events` and `logs` into the pack's slots (replacing what was there), so the pack's
/// JSON, its fingerprint and every explainer see them.
pub fn attach(pack: &mut EvidencePack, events: &[KubeEvent], logs: &[LogLine]) {
    pack.kubernetes_events = events
        .iter()
        .filter_map(|e| serde_json::to_value(e).ok())
        .collect();
    pack.logs = logs
        .iter()
        .filter_map(|l| serde_json::to_value(l).ok())
        .collect();
}

/// The events and log lines in a pack's slots (those [`attach`] put there).
pub fn attached(pack: &EvidencePack) -> (Vec<KubeEvent>, Vec<LogLine>) {
    let events = pack
        .kubernetes_events
        .iter()
        .filter_map(|v| serde_json::from_value(v.clone()).ok())
        .collect();
    let logs = pack
        .logs
        .iter()
        .filter_map(|v| serde_json::from_value(v.clone()).ok())
        .collect();
    (events, logs)
}

/// Fetches events and logs for `pack` at the same time and [`attach`]es what arrived. A
/// failing or absent source only means less evidence: its error is returned for logging and
/// the other source's items are still attached.
pub async fn enrich(
    pack: &mut EvidencePack,
    events: Option<&EventSource>,
    logs: Option<&LokiSource>,
) -> Vec<Error> {
    let snapshot: &EvidencePack = pack;
    let (ev, lg) = tokio::join!(
        async {
            match events {
                Some(s) => s.fetch(snapshot).await,
                None => Ok(Vec::new()),
            }
        },
        async {
            match logs {
                Some(s) => s.fetch(snapshot).await,
                None => Ok(Vec::new()),
            }
        }
    );
    let mut errors = Vec::new();
    let ev = ev.unwrap_or_else(|e| {
        errors.push(e);
        Vec::new()
    });
    let lg = lg.unwrap_or_else(|e| {
        errors.push(e);
        Vec::new()
    });
    attach(pack, &ev, &lg);
    errors
}

/// An object whose events are wanted.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectRef {
    /// Its namespace (`default` for nodes, where their events live).
    pub namespace: String,
    /// `Node` for nodes; `None` for namespaced objects, found by name whatever their kind
    /// (a workload's events are on its Deployment, ReplicaSet or StatefulSet).
    pub kind: Option<String>,
    /// Its name.
    pub name: String,
}

/// The objects of `pack`, highest-ranked series first: each series' pod, its workload,
/// its deployment and service labels within its namespace, and its node.
pub fn objects(pack: &EvidencePack) -> Vec<ObjectRef> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    let mut push = |o: ObjectRef| {
        if seen.insert(o.clone()) {
            out.push(o);
        }
    };
    let series = labels::all_series(pack);
    for s in series {
        let l = labels::parse(s);
        let get = |k: &str| l.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        if let Some(ns) = get("namespace") {
            let named = |name: String| ObjectRef {
                namespace: ns.clone(),
                kind: None,
                name,
            };
            if let Some(pod) = get("pod") {
                if let Some(w) = workload_of_pod(&pod) {
                    push(named(w.to_owned()));
                }
                push(named(pod));
            }
            for k in ["deployment", "statefulset", "daemonset", "service"] {
                if let Some(v) = get(k) {
                    push(named(v));
                }
            }
        }
        if let Some(node) = get("node") {
            push(ObjectRef {
                namespace: "default".into(),
                kind: Some("Node".into()),
                name: node,
            });
        }
    }
    out
}

/// Limits of the Kubernetes event source.
#[derive(Clone, Debug, PartialEq)]
pub struct EventsConfig {
    /// Objects asked about, one list call each (default 10).
    pub max_objects: usize,
    /// Events kept in all (default 20).
    pub max_events: usize,
    /// Bytes of each message kept (default 300).
    pub max_message_bytes: usize,
    /// The whole fetch's time limit (default 5 s).
    pub timeout: Duration,
    /// Events last seen this long before the incident started are left out (default 30 min).
    pub lookback: Duration,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            max_objects: 10,
            max_events: 20,
            max_message_bytes: 300,
            timeout: Duration::from_secs(5),
            lookback: Duration::from_secs(30 * 60),
        }
    }
}

/// Reads Kubernetes events (core/v1) about an incident's objects.
#[derive(Clone)]
pub struct EventSource {
    client: kube::Client,
    config: EventsConfig,
}

impl std::fmt::Debug for EventSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSource")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl EventSource {
    /// A source on `client` (e.g. `kube::Client::try_default()`: in-cluster config, else
    /// the kubeconfig).
    pub fn new(client: kube::Client, config: EventsConfig) -> Self {
        Self { client, config }
    }

    /// A source from the in-cluster config or, outside a cluster, the kubeconfig.
    pub async fn infer(config: EventsConfig) -> Result<Self> {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| Error::Kube(e.to_string()))?;
        Ok(Self::new(client, config))
    }

    /// The events about `pack`'s objects: warnings first, then the most recent, at most
    /// [`EventsConfig::max_events`], IDs `k1`, … in that order. Objects whose list call fails
    /// are skipped; the error is returned only when every call failed or time ran out.
    pub async fn fetch(&self, pack: &EvidencePack) -> Result<Vec<KubeEvent>> {
        let objects: Vec<ObjectRef> = objects(pack)
            .into_iter()
            .take(self.config.max_objects)
            .collect();
        if objects.is_empty() {
            return Ok(Vec::new());
        }
        let since = jiff::Timestamp::from_millisecond(pack.incident.started_at.ms)
            .ok()
            .and_then(|t| {
                let lookback = jiff::SignedDuration::try_from(self.config.lookback).ok()?;
                t.checked_sub(lookback).ok()
            });
        let work = async {
            let mut found = Vec::new();
            let mut last_err = None;
            let mut ok = 0;
            for o in &objects {
                match self.list(o).await {
                    Ok(evs) => {
                        ok += 1;
                        found.extend(evs);
                    }
                    Err(e) => {
                        tracing::debug!(namespace = %o.namespace, object = %o.name, error = %e, "kubernetes events: list failed");
                        last_err = Some(e);
                    }
                }
            }
            match last_err {
                Some(e) if ok == 0 => Err(e),
                _ => Ok(found),
            }
        };
        let found = tokio::time::timeout(self.config.timeout, work)
            .await
            .map_err(|_| Error::Kube(format!("timed out after {:?}", self.config.timeout)))??;
        Ok(self.select(found, since))
    }

    async fn list(&self, o: &ObjectRef) -> Result<Vec<(Option<jiff::Timestamp>, KubeEvent)>> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &o.namespace);
        let mut selector = format!("involvedObject.name={}", o.name);
        if let Some(k) = &o.kind {
            selector.push_str(&format!(",involvedObject.kind={k}"));
        }
        let limit = u32::try_from(self.config.max_events)
            .unwrap_or(u32::MAX)
            .max(1);
        let list = api
            .list(&ListParams::default().fields(&selector).limit(limit))
            .await
            .map_err(|e| Error::Kube(e.to_string()))?;
        Ok(list
            .items
            .into_iter()
            .map(|e| {
                // k8s-openapi has its own jiff version: cross over in milliseconds.
                let seen = e
                    .last_timestamp
                    .as_ref()
                    .map(|t| t.0.as_millisecond())
                    .or(e.event_time.as_ref().map(|t| t.0.as_millisecond()))
                    .or(e.first_timestamp.as_ref().map(|t| t.0.as_millisecond()))
                    .or(e
                        .metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|t| t.0.as_millisecond()))
                    .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok());
                let obj = &e.involved_object;
                let ev = KubeEvent {
                    id: String::new(),
                    namespace: obj.namespace.clone().unwrap_or_else(|| o.namespace.clone()),
                    object: format!(
                        "{}/{}",
                        obj.kind.as_deref().unwrap_or("Object"),
                        obj.name.as_deref().unwrap_or(&o.name)
                    ),
                    type_: e.type_.clone().unwrap_or_else(|| "Normal".into()),
                    reason: e.reason.clone().unwrap_or_default(),
                    message: clip(
                        e.message.as_deref().unwrap_or_default().trim(),
                        self.config.max_message_bytes,
                    ),
                    count: e.count.unwrap_or(1),
                    last_seen: seen.map(|t| t.to_string()),
                };
                (seen, ev)
            })
            .collect())
    }

    fn select(
        &self,
        mut found: Vec<(Option<jiff::Timestamp>, KubeEvent)>,
        since: Option<jiff::Timestamp>,
    ) -> Vec<KubeEvent> {
        found.retain(|(seen, _)| match (seen, since) {
            (Some(s), Some(since)) => *s >= since,
            _ => true,
        });
        // Warnings first, then newest; ties by object and reason so the order is stable.
        found.sort_by(|(ta, a), (tb, b)| {
            (b.type_ == "Warning")
                .cmp(&(a.type_ == "Warning"))
                .then(tb.cmp(ta))
                .then_with(|| (&a.object, &a.reason).cmp(&(&b.object, &b.reason)))
        });
        let mut seen = BTreeSet::new();
        found
            .into_iter()
            .map(|(_, e)| e)
            // One list per object can overlap (a pod's workload prefix): drop repeats.
            .filter(|e| seen.insert((e.object.clone(), e.reason.clone(), e.message.clone())))
            .take(self.config.max_events)
            .enumerate()
            .map(|(i, mut e)| {
                e.id = format!("k{}", i + 1);
                e
            })
            .collect()
    }
}

/// Where and how to read logs from Loki.
#[derive(Clone, Debug)]
pub struct LokiConfig {
    /// The base URL (`http://loki:3100`); `/loki/api/v1/query_range` is appended.
    pub url: String,
    /// `X-Scope-OrgID` for a multi-tenant Loki.
    pub org_id: Option<String>,
    /// A bearer token.
    pub bearer: Option<Secret>,
    /// The label holding the namespace (default `namespace`).
    pub namespace_label: String,
    /// The label holding the pod (default `pod`).
    pub pod_label: String,
    /// A LogQL regular expression lines must match (default: error-like words), or none.
    pub line_filter: Option<String>,
    /// Namespaces queried, one query each (default 3).
    pub max_namespaces: usize,
    /// Pods per query (default 10).
    pub max_pods: usize,
    /// Lines kept in all (default 30).
    pub max_lines: usize,
    /// Bytes kept of each line (default 400).
    pub max_line_bytes: usize,
    /// Bytes of lines kept in all (default 8 KiB).
    pub max_bytes: usize,
    /// Time read before the incident's start (default 10 min).
    pub lookback: Duration,
    /// The whole fetch's time limit (default 5 s).
    pub timeout: Duration,
}

impl LokiConfig {
    /// The defaults for Loki at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            org_id: None,
            bearer: None,
            namespace_label: "namespace".into(),
            pod_label: "pod".into(),
            line_filter: Some(
                "(?i)(error|warn|fail|fatal|panic|exception|timeout|refused|oom|killed)".into(),
            ),
            max_namespaces: 3,
            max_pods: 10,
            max_lines: 30,
            max_line_bytes: 400,
            max_bytes: 8 * 1024,
            lookback: Duration::from_secs(10 * 60),
            timeout: Duration::from_secs(5),
        }
    }
}

/// Reads recent log lines of an incident's pods from Loki's `query_range` API.
#[derive(Clone, Debug)]
pub struct LokiSource {
    http: reqwest::Client,
    config: LokiConfig,
}

#[derive(Deserialize)]
struct LokiResponse {
    status: String,
    data: LokiData,
}

#[derive(Deserialize)]
struct LokiData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Vec<LokiStream>,
}

#[derive(Deserialize)]
struct LokiStream {
    stream: std::collections::BTreeMap<String, String>,
    values: Vec<(String, String)>,
}

/// A LogQL string literal's content: backslashes and quotes escaped.
fn logql_str(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// A regular expression matching exactly `s` (pod names hold `.` and `-`).
fn regex_literal(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl LokiSource {
    /// A source with `config`.
    pub fn new(config: LokiConfig) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| Error::Loki(e.to_string()))?;
        Ok(Self { http, config })
    }

    /// The LogQL queries for `pack`: one per namespace, over its pods.
    pub fn queries(&self, pack: &EvidencePack) -> Vec<String> {
        let mut by_ns: std::collections::BTreeMap<String, BTreeSet<String>> = Default::default();
        let series = labels::all_series(pack);
        for s in series {
            if let (Some(ns), Some(pod)) = (labels::get(s, "namespace"), labels::get(s, "pod")) {
                by_ns.entry(ns).or_default().insert(pod);
            }
        }
        let c = &self.config;
        by_ns
            .into_iter()
            .take(c.max_namespaces)
            .map(|(ns, pods)| {
                let pods: Vec<String> = pods
                    .iter()
                    .take(c.max_pods)
                    .map(|p| regex_literal(p))
                    .collect();
                let mut q = format!(
                    "{{{}=\"{}\", {}=~\"{}\"}}",
                    c.namespace_label,
                    logql_str(&ns),
                    c.pod_label,
                    logql_str(&pods.join("|"))
                );
                if let Some(f) = &c.line_filter {
                    q.push_str(&format!(" |~ \"{}\"", logql_str(f)));
                }
                q
            })
            .collect()
    }

    /// The newest matching lines around `pack`'s time span, oldest first, IDs `l1`, … .
    pub async fn fetch(&self, pack: &EvidencePack) -> Result<Vec<LogLine>> {
        let queries = self.queries(pack);
        if queries.is_empty() {
            return Ok(Vec::new());
        }
        let c = &self.config;
        let lookback_ms = i64::try_from(c.lookback.as_millis()).unwrap_or(i64::MAX);
        let start_ns =
            i128::from(pack.incident.started_at.ms.saturating_sub(lookback_ms)) * 1_000_000;
        let end_ns =
            i128::from(pack.incident.last_anomaly_at.ms.saturating_add(60_000)) * 1_000_000;
        let work = async {
            let mut lines = Vec::new();
            let mut last_err = None;
            for q in &queries {
                match self.query(q, start_ns, end_ns).await {
                    Ok(l) => lines.extend(l),
                    Err(e) => {
                        tracing::debug!(error = %e, "loki: query failed");
                        last_err = Some(e);
                    }
                }
            }
            // One namespace's failure costs its lines only; all failing is an error.
            match last_err {
                Some(e) if lines.is_empty() => Err(e),
                _ => Ok(lines),
            }
        };
        let mut lines = tokio::time::timeout(c.timeout, work)
            .await
            .map_err(|_| Error::Loki(format!("timed out after {:?}", c.timeout)))??;
        // Newest first to choose, oldest first to read; ties by pod and text for stability.
        lines.sort_by(|a, b| {
            b.0.cmp(&a.0)
                .then_with(|| (&a.1.pod, &a.1.line).cmp(&(&b.1.pod, &b.1.line)))
        });
        let mut total = 0;
        let mut kept = Vec::new();
        for (t, mut l) in lines.into_iter().take(c.max_lines) {
            l.line = clip(l.line.trim_end(), c.max_line_bytes);
            total += l.line.len();
            if total > c.max_bytes {
                break;
            }
            kept.push((t, l));
        }
        kept.reverse();
        Ok(kept
            .into_iter()
            .enumerate()
            .map(|(i, (_, mut l))| {
                l.id = format!("l{}", i + 1);
                l
            })
            .collect())
    }

    async fn query(&self, q: &str, start_ns: i128, end_ns: i128) -> Result<Vec<(i128, LogLine)>> {
        let c = &self.config;
        let url = format!("{}/loki/api/v1/query_range", c.url.trim_end_matches('/'));
        let url = url::Url::parse_with_params(
            &url,
            &[
                ("query", q.to_owned()),
                ("start", start_ns.to_string()),
                ("end", end_ns.to_string()),
                ("limit", c.max_lines.to_string()),
                ("direction", "backward".to_owned()),
            ],
        )
        .map_err(|e| Error::Loki(format!("url: {e}")))?;
        let mut req = self.http.get(url);
        if let Some(org) = &c.org_id {
            req = req.header("X-Scope-OrgID", org);
        }
        if let Some(b) = &c.bearer {
            req = req.bearer_auth(b.expose());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| Error::Loki(e.without_url().to_string()))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(Error::Loki(format!("status {}", status.as_u16())));
        }
        let body: LokiResponse = resp
            .json()
            .await
            .map_err(|e| Error::Loki(format!("response: {}", e.without_url())))?;
        if body.status != "success" || body.data.result_type != "streams" {
            return Err(Error::Loki(format!(
                "unexpected response: status {:?}, resultType {:?}",
                body.status, body.data.result_type
            )));
        }
        let mut out = Vec::new();
        for s in body.data.result {
            let ns = s.stream.get(&c.namespace_label).cloned();
            let pod = s.stream.get(&c.pod_label).cloned();
            for (ts, line) in s.values {
                let Ok(t) = ts.parse::<i128>() else { continue };
                let at = i64::try_from(t / 1_000_000)
                    .ok()
                    .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
                    .map_or_else(|| ts.clone(), |t| t.to_string());
                out.push((
                    t,
                    LogLine {
                        id: String::new(),
                        at,
                        namespace: ns.clone(),
                        pod: pod.clone(),
                        line,
                    },
                ));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_respects_char_boundaries() {
        assert_eq!(clip("hello", 10), "hello");
        assert_eq!(clip("héllo wörld", 6), "hé…");
        assert!(clip("ééééé", 5).len() <= 5);
    }

    #[test]
    fn logql_escapes() {
        assert_eq!(regex_literal("a.b-c"), "a\\.b-c");
        assert_eq!(logql_str("a\\.b\"c"), "a\\\\.b\\\"c");
    }
}
