//! The validated configuration: what the daemon and the other subcommands consume.
//!
//! Every value here has passed validation: aliases resolve, PromQL parses, durations are
//! positive and consistent, secrets are read, files exist. Defaults are filled in, so nothing
//! is optional unless it is genuinely absent (no pull source, no TLS client certificate…).

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use portent_core::{Direction, Score};
use url::Url;

use crate::Secret;

/// The name of a query, model, schedule or output, as written in the config.
///
/// Aliases start with a letter or `_` and hold letters, digits, `_` and `-`; query and model
/// aliases become the `query` and `model` labels of portent's output series.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Alias(String);

impl Alias {
    /// Checks `s` against the alias rules.
    pub fn new(s: &str) -> Result<Self, String> {
        let mut chars = s.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !first_ok || !rest_ok {
            return Err(format!(
                "alias {s:?}: must start with a letter or _ and hold only letters, digits, _ \
                 and -"
            ));
        }
        if s.len() > 64 {
            return Err(format!("alias {s:?}: longer than 64 characters"));
        }
        Ok(Self(s.to_owned()))
    }

    /// The alias as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Alias {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Alias {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A whole, validated portent configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Where samples come from.
    pub source: Source,
    /// PromQL queries by alias; never empty.
    pub queries: BTreeMap<Alias, Query>,
    /// Models by alias; never empty (a `default` auto model when the file has none).
    pub models: BTreeMap<Alias, Model>,
    /// Fit and score schedules by alias; never empty (a `default` schedule when the file has
    /// none).
    pub schedules: BTreeMap<Alias, Schedule>,
    /// Where scores go, by alias; never empty (`metrics`, the `/metrics` exposition, when the
    /// file has none).
    pub outputs: BTreeMap<Alias, Output>,
    /// The HTTP server.
    pub server: Server,
    /// Persistent state.
    pub storage: Storage,
    /// Grouping anomalies into incidents, and where incidents are sent.
    pub incidents: Incidents,
    /// How incidents are explained: runbooks, more evidence, an LLM.
    pub explain: Explain,
    /// Things that are allowed but probably not meant (an unused query, TLS verification
    /// off), each starting with its key path.
    pub warnings: Vec<String>,
}

/// Where samples come from: a Prometheus-compatible API to pull from, a remote_write receiver
/// to be pushed to, or both. At least one is set.
#[derive(Clone, Debug, PartialEq)]
pub struct Source {
    /// Pull through the Prometheus HTTP API (`query_range`).
    pub pull: Option<Pull>,
    /// Accept Prometheus remote_write (1.0) at `/api/v1/write` on the server's listen address.
    pub push: Option<Push>,
}

/// A Prometheus-compatible query API (Prometheus, VictoriaMetrics, Mimir, Thanos).
#[derive(Clone, Debug, PartialEq)]
pub struct Pull {
    /// The server and how to talk to it; `url` is the API root (the client appends
    /// `/api/v1/query_range`), which may carry a path prefix such as `/prometheus`.
    pub endpoint: Endpoint,
    /// Longest `query_range` answer per series the server allows; longer ranges are split.
    pub max_points_per_series: u32,
}

/// The remote_write receiver.
#[derive(Clone, Debug, PartialEq)]
pub struct Push {
    /// Requests with a larger body (as sent, snappy-compressed) are refused with 413.
    pub max_body_size: u64,
    /// Samples the push buffer keeps per series (at most one per query step), oldest dropped
    /// first: what fits and warm-ups of pushed series can read.
    pub max_samples_per_series: usize,
    /// Samples the push buffer keeps over all series: while it is full, new series are
    /// refused (and counted) and existing ones cannot grow.
    pub max_samples: usize,
    /// How late a pushed sample may arrive and still be scored: each score tick also reads
    /// this far back before its start.
    pub lateness: Duration,
}

/// An HTTP endpoint portent calls: the pull source or a remote_write output.
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    /// `http` or `https`, with a host, without credentials (those go in `auth`).
    pub url: Url,
    /// How to authenticate, if at all.
    pub auth: Option<Auth>,
    /// Extra request headers (e.g. `X-Scope-OrgID` for Mimir and Cortex tenants), by name as
    /// written.
    pub headers: BTreeMap<String, String>,
    /// TLS settings for `https` URLs.
    pub tls: Tls,
    /// Timeout of one request.
    pub timeout: Duration,
    /// Retries of failed requests.
    pub retries: Retries,
}

/// Credentials for an [`Endpoint`].
#[derive(Clone, Debug, PartialEq)]
pub enum Auth {
    /// `Authorization: Bearer <token>`.
    Bearer(Secret),
    /// `Authorization: Basic …`.
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: Secret,
    },
}

/// TLS settings. Certificates are verified unless `insecure_skip_verify`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tls {
    /// CA bundle (PEM) to verify the server with, instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate for mutual TLS.
    pub client_cert: Option<ClientCert>,
    /// Name to verify the server's certificate against, instead of the URL's host.
    pub server_name: Option<String>,
    /// Accept any server certificate. Only for tests.
    pub insecure_skip_verify: bool,
}

/// A client certificate and its key, both PEM files that existed when the config was loaded.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientCert {
    /// The certificate (chain).
    pub cert_file: PathBuf,
    /// Its private key.
    pub key_file: PathBuf,
}

/// Exponential backoff between attempts (the client adds jitter).
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Retries {
    /// Attempts after the first; 0 disables retries.
    pub max: u32,
    /// Wait before the first retry; doubles with each retry.
    pub initial_backoff: Duration,
    /// The wait never exceeds this.
    pub max_backoff: Duration,
}

/// A PromQL query whose result series are each scored.
#[derive(Clone, Debug, PartialEq)]
pub struct Query {
    /// The expression; it parses and gives an instant vector or a scalar. For a push query, a
    /// plain series selector (`http_requests_total{job="api"}`).
    pub expr: String,
    /// Resolution of `query_range`; for a push query, the least time between two samples of a
    /// series that the push buffer keeps.
    pub step: Duration,
    /// Where its samples come from.
    pub source: QuerySource,
}

/// Where a query's samples come from.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum QuerySource {
    /// Run as `query_range` against `source.pull`.
    Pull,
    /// Pushed by remote_write to `source.push`: every pushed series its selector matches.
    Push,
}

impl QuerySource {
    /// `pull` or `push`, as written in the config and used in self-metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            QuerySource::Pull => "pull",
            QuerySource::Push => "push",
        }
    }
}

/// A model applied to some queries on some schedules.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    /// Which model, with its options.
    pub kind: ModelKind,
    /// The queries it scores: existing aliases, no repeats, never empty.
    pub queries: Vec<Alias>,
    /// The schedules it runs on: existing aliases, no repeats, never empty.
    pub schedules: Vec<Alias>,
    /// Where its scores go: existing aliases, no repeats, never empty.
    pub outputs: Vec<Alias>,
}

/// The kinds of model, each with its own options.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelKind {
    /// portent's default univariate detector (`type: auto`): seasonal baseline when the series
    /// has seasonality, robust level and scale, drift, flatline and missing data.
    Auto(AutoModel),
    /// A multivariate model (`type: isolation_forest` or `autoencoder`) over the rows that
    /// the model's queries form when joined on `join_on`: one score per entity (a pod), for
    /// values that are each normal but unusual together.
    Joint(JointModel),
}

impl Model {
    /// The score from which the model's verdicts count as anomalous.
    pub fn threshold(&self) -> Score {
        match &self.kind {
            ModelKind::Auto(m) => m.threshold,
            ModelKind::Joint(m) => m.threshold,
        }
    }
}

/// Which multivariate method a joint model uses.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum JointMethod {
    /// An Isolation Forest: how quickly random splits isolate the row.
    IsolationForest,
    /// A small autoencoder: how badly it reconstructs the row.
    Autoencoder,
}

impl JointMethod {
    /// The `type` as written in the config.
    pub const fn as_str(self) -> &'static str {
        match self {
            JointMethod::IsolationForest => "isolation_forest",
            JointMethod::Autoencoder => "autoencoder",
        }
    }
}

/// Options of a multivariate model. Its features are the model's `queries`, in order (at
/// least two, all with the same step).
#[derive(Clone, Debug, PartialEq)]
pub struct JointModel {
    /// The method.
    pub method: JointMethod,
    /// The labels that name one entity: the series of each query that agree on these form
    /// one row per step. Never empty, no repeats, no `__name__`.
    pub join_on: Vec<String>,
    /// The labels whose values pick the entity's model: entities that agree on them (the
    /// replicas of one workload) share one model trained on all their rows, so that a pod a
    /// rollout created a minute ago is scored at once. Defaults to `join_on`: one model per
    /// entity.
    pub pool_by: Vec<String>,
    /// As [`AutoModel::threshold`].
    pub threshold: Score,
}

/// Options of the `auto` model.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct AutoModel {
    /// Which deviations count.
    pub direction: Direction,
    /// Deviations smaller than this, in the series' units, never score (>= 0).
    pub min_abs_deviation: f64,
    /// Deviations smaller than this fraction of the expected value never score (>= 0).
    pub min_rel_deviation: f64,
    /// The score from which a sample counts as anomalous (in (0, 1]): for intervals reported
    /// by `backtest` and the alerting rules `portent rules` generates.
    pub threshold: Score,
}

/// When a model refits and when it scores.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Schedule {
    /// How often to refit on history.
    pub fit_every: Duration,
    /// How much history a fit reads; at least `score_every`.
    pub fit_window: Duration,
    /// How often to read new samples and score them; at most `fit_every`.
    pub score_every: Duration,
}

/// Where scores (`portent_anomaly_score`, `portent_yhat`, …) go.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Exposed on the server's `/metrics` for Prometheus to scrape.
    Metrics,
    /// Sent by Prometheus remote_write to any compatible endpoint (boxed: it is large).
    RemoteWrite(Box<Endpoint>),
}

/// The HTTP server: UI, JSON API, `/metrics`, `/-/healthy`, `/-/ready`, remote_write receiver.
#[derive(Clone, Debug, PartialEq)]
pub struct Server {
    /// Address everything is served on.
    pub listen: SocketAddr,
    /// If set, `/metrics` is served here instead (and not on `listen`).
    pub metrics_listen: Option<SocketAddr>,
    /// Bearer token required by endpoints that change state (reload, feedback). Without one
    /// those endpoints are refused.
    pub bearer_token: Option<Secret>,
}

/// Persistent model state.
#[derive(Clone, Debug, PartialEq)]
pub struct Storage {
    /// Directory of the state; resolved against the config file's directory.
    pub dir: PathBuf,
    /// A series unseen this long is forgotten, state and all.
    pub series_retention: Duration,
}

/// Incidents: anomalies that overlap in time and share topology, grouped, ranked and sent.
#[derive(Clone, Debug, PartialEq)]
pub struct Incidents {
    /// Whether anomalies are grouped into incidents at all.
    pub enabled: bool,
    /// How long an incident stays anomalous before it fires and notifies.
    pub hold: Duration,
    /// The longest quiet stretch that still counts as overlapping in time.
    pub gap: Duration,
    /// How long without anomalies before an incident resolves.
    pub resolve_after: Duration,
    /// How long after an incident started members still beyond their pre-incident band keep
    /// it open (zero: only anomalies do).
    pub sustain: Duration,
    /// How long after resolving an incident is reopened by another anomaly of one of its
    /// series (zero: never).
    pub reopen_within: Duration,
    /// How long a resolved incident is kept.
    pub retention: Duration,
    /// The most open incidents.
    pub max_open: usize,
    /// The most series in one incident.
    pub max_series: usize,
    /// Whether anomalies sharing only a namespace belong together.
    pub group_by_namespace: bool,
    /// The label keys that carry topology.
    pub labels: TopologyLabels,
    /// portent's address as users reach it (`http://portent.monitoring:9099`), for links in
    /// notifications; `None` links to `server.listen`.
    pub external_url: Option<Url>,
    /// How often Alertmanager silences are read as feedback.
    pub silences_every: Duration,
    /// Alertmanagers to post incidents to (API v2).
    pub alertmanager: Vec<AlertmanagerNotify>,
    /// Slack incoming webhooks.
    pub slack: Vec<SlackNotify>,
    /// Generic JSON webhooks.
    pub webhook: Vec<WebhookNotify>,
}

/// How incidents are explained. Without an `llm`, explanations are deterministic.
#[derive(Clone, Debug, PartialEq)]
pub struct Explain {
    /// A runbook catalogue (YAML) matched against every incident; the file existed at load.
    pub runbooks: Option<PathBuf>,
    /// Replace namespaces, pods, nodes, hosts and IP addresses with aliases before anything
    /// leaves for the LLM, and restore them in the answer.
    pub pseudonymize: bool,
    /// Read Kubernetes events about the objects of an incident (in-cluster config or
    /// kubeconfig).
    pub kubernetes_events: bool,
    /// The model that writes explanations.
    pub llm: Option<Llm>,
    /// Loki, for recent log lines of the pods involved.
    pub loki: Option<Loki>,
    /// The webhooks runbook actions may call, and whether they are called for real.
    pub actions: Actions,
    /// Slack's signing secret: with it, `POST /api/v1/slack/command` answers slash commands.
    pub slack_signing_secret: Option<Secret>,
}

/// Runbook actions: an entry's action runs only when the entry is `automatic: true` and names
/// one of these webhooks, and is sent only when `live`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Actions {
    /// Send for real; otherwise (the default) record what would have been sent.
    pub live: bool,
    /// Webhooks by the name runbook entries use.
    pub webhooks: BTreeMap<String, ActionWebhook>,
}

/// A webhook runbook actions may call.
#[derive(Clone, Debug, PartialEq)]
pub struct ActionWebhook {
    /// Where to POST.
    pub url: Url,
    /// A bearer token.
    pub bearer_token: Option<Secret>,
}

/// Which API an LLM speaks.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LlmProvider {
    /// Anthropic's Messages API.
    Anthropic,
    /// OpenAI-compatible chat completions (OpenAI, vLLM, Ollama, llama.cpp server).
    OpenAi,
}

/// An LLM endpoint and its limits.
#[derive(Clone, Debug, PartialEq)]
pub struct Llm {
    /// Its API.
    pub provider: LlmProvider,
    /// Its base URL.
    pub url: Url,
    /// The model name.
    pub model: String,
    /// The key; optional for local OpenAI-compatible servers.
    pub api_key: Option<Secret>,
    /// The most output tokens per call.
    pub max_tokens: u32,
    /// Time limit per HTTP attempt.
    pub timeout: Duration,
    /// Ask OpenAI-compatible servers for a JSON object answer.
    pub json_mode: bool,
    /// Input plus output tokens over every call for one incident.
    pub max_tokens_per_incident: u64,
    /// US dollars per incident, enforced when prices are set.
    pub max_cost_per_incident: f64,
    /// US dollars per million input tokens (0: unknown).
    pub input_price_per_mtok: f64,
    /// US dollars per million output tokens (0: unknown).
    pub output_price_per_mtok: f64,
}

/// A Loki to read log lines from.
#[derive(Clone, Debug, PartialEq)]
pub struct Loki {
    /// Its base URL (`http://loki:3100`).
    pub url: Url,
    /// `X-Scope-OrgID`, for multi-tenant Loki.
    pub tenant: Option<String>,
    /// A bearer token.
    pub bearer_token: Option<Secret>,
}

/// The label keys that carry topology.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopologyLabels {
    /// The namespace label.
    pub namespace: String,
    /// The service label.
    pub service: String,
    /// The workload label.
    pub deployment: String,
    /// The pod label.
    pub pod: String,
    /// The node label.
    pub node: String,
}

/// An Alertmanager incidents are posted to.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertmanagerNotify {
    /// Its base URL (`http://alertmanager:9093`).
    pub url: Url,
    /// Extra labels on every alert (default `severity: warning`).
    pub labels: BTreeMap<String, String>,
    /// The `runbook_url` annotation; `{incident}` is replaced by the incident's ID.
    pub runbook_url: Option<String>,
    /// How often a firing alert is re-posted.
    pub resend_every: Duration,
    /// Extra request headers (a tenant header for Mimir's Alertmanager).
    pub headers: BTreeMap<String, String>,
    /// A bearer token, for an Alertmanager behind an authenticating proxy.
    pub bearer_token: Option<Secret>,
    /// Whether its silences on portent's alerts count as false-positive feedback.
    pub read_silences: bool,
}

/// A Slack incoming webhook.
#[derive(Clone, Debug, PartialEq)]
pub struct SlackNotify {
    /// The webhook URL: a secret, from `webhook_url`, `webhook_url_file` or `webhook_url_env`.
    pub webhook_url: Secret,
}

/// A generic JSON webhook.
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookNotify {
    /// Where to POST.
    pub url: Url,
    /// Extra request headers.
    pub headers: BTreeMap<String, String>,
    /// A bearer token, sent as `Authorization: Bearer …`.
    pub bearer_token: Option<Secret>,
}

impl Config {
    /// The queries a model scores, with their aliases, in the model's order.
    pub fn queries_of<'a>(
        &'a self,
        model: &'a Model,
    ) -> impl Iterator<Item = (&'a Alias, &'a Query)> {
        model
            .queries
            .iter()
            .filter_map(|a| self.queries.get_key_value(a.as_str()))
    }

    /// The schedules a model runs on, with their aliases, in the model's order.
    pub fn schedules_of<'a>(
        &'a self,
        model: &'a Model,
    ) -> impl Iterator<Item = (&'a Alias, &'a Schedule)> {
        model
            .schedules
            .iter()
            .filter_map(|a| self.schedules.get_key_value(a.as_str()))
    }

    /// The outputs a model writes to, with their aliases, in the model's order.
    pub fn outputs_of<'a>(
        &'a self,
        model: &'a Model,
    ) -> impl Iterator<Item = (&'a Alias, &'a Output)> {
        model
            .outputs
            .iter()
            .filter_map(|a| self.outputs.get_key_value(a.as_str()))
    }
}
