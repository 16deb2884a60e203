//! The config as written: every key optional where it has a default, unknown keys rejected.
//!
//! Only the shape is checked here (and the syntax of durations, sizes and enums, so that those
//! errors carry a line and column); [`crate::validate`] turns this into a [`crate::Config`].

use std::collections::BTreeMap;

use portent_core::Direction;
use serde::{Deserialize, Deserializer};

use crate::units::{RawDuration, RawSize};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub(crate) source: Option<RawSource>,
    pub(crate) queries: Option<BTreeMap<String, RawQuery>>,
    pub(crate) models: Option<BTreeMap<String, RawModel>>,
    pub(crate) schedules: Option<BTreeMap<String, RawSchedule>>,
    pub(crate) outputs: Option<BTreeMap<String, RawOutput>>,
    pub(crate) server: Option<RawServer>,
    pub(crate) storage: Option<RawStorage>,
    pub(crate) incidents: Option<RawIncidents>,
    pub(crate) explain: Option<RawExplain>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSource {
    pub(crate) pull: Option<RawPull>,
    /// `push:` with no value enables the receiver with defaults, hence the double option:
    /// absent is `None`, empty is `Some(None)`.
    #[serde(default, deserialize_with = "present")]
    pub(crate) push: Option<Option<RawPush>>,
}

/// Marks a key as present even when its value is null.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// `source.pull`: the endpoint keys it shares with `outputs.*` of type `remote_write`, plus
/// its own.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPull {
    pub(crate) url: String,
    pub(crate) auth: Option<RawAuth>,
    pub(crate) headers: Option<BTreeMap<String, String>>,
    pub(crate) tls: Option<RawTls>,
    pub(crate) timeout: Option<RawDuration>,
    pub(crate) retries: Option<RawRetries>,
    pub(crate) max_points_per_series: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAuth {
    pub(crate) bearer_token: Option<String>,
    pub(crate) bearer_token_file: Option<String>,
    pub(crate) bearer_token_env: Option<String>,
    pub(crate) basic_auth: Option<RawBasicAuth>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBasicAuth {
    pub(crate) username: String,
    pub(crate) password: Option<String>,
    pub(crate) password_file: Option<String>,
    pub(crate) password_env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    pub(crate) ca_file: Option<String>,
    pub(crate) cert_file: Option<String>,
    pub(crate) key_file: Option<String>,
    pub(crate) server_name: Option<String>,
    pub(crate) insecure_skip_verify: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRetries {
    pub(crate) max: Option<u32>,
    pub(crate) initial_backoff: Option<RawDuration>,
    pub(crate) max_backoff: Option<RawDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPush {
    pub(crate) max_body_size: Option<RawSize>,
    pub(crate) max_samples_per_series: Option<u32>,
    pub(crate) max_samples: Option<u64>,
    pub(crate) lateness: Option<RawDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawQuery {
    pub(crate) expr: String,
    pub(crate) step: Option<RawDuration>,
    pub(crate) source: Option<RawQuerySource>,
}

#[derive(Copy, Clone, Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RawQuerySource {
    Pull,
    Push,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawModel {
    #[serde(rename = "type")]
    pub(crate) kind: Option<RawModelType>,
    pub(crate) direction: Option<Direction>,
    pub(crate) min_abs_deviation: Option<f64>,
    pub(crate) min_rel_deviation: Option<f64>,
    pub(crate) threshold: Option<f64>,
    pub(crate) queries: Option<Vec<String>>,
    pub(crate) join_on: Option<Vec<String>>,
    pub(crate) pool_by: Option<Vec<String>>,
    pub(crate) schedules: Option<Vec<String>>,
    pub(crate) outputs: Option<Vec<String>>,
}

#[derive(Copy, Clone, Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RawModelType {
    Auto,
    IsolationForest,
    Autoencoder,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSchedule {
    pub(crate) fit_every: Option<RawDuration>,
    pub(crate) fit_window: Option<RawDuration>,
    pub(crate) score_every: Option<RawDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOutput {
    #[serde(rename = "type")]
    pub(crate) kind: RawOutputType,
    pub(crate) url: Option<String>,
    pub(crate) auth: Option<RawAuth>,
    pub(crate) headers: Option<BTreeMap<String, String>>,
    pub(crate) tls: Option<RawTls>,
    pub(crate) timeout: Option<RawDuration>,
    pub(crate) retries: Option<RawRetries>,
}

#[derive(Copy, Clone, Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RawOutputType {
    Metrics,
    RemoteWrite,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    pub(crate) listen: Option<String>,
    pub(crate) metrics_listen: Option<String>,
    pub(crate) bearer_token: Option<String>,
    pub(crate) bearer_token_file: Option<String>,
    pub(crate) bearer_token_env: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStorage {
    pub(crate) dir: Option<String>,
    pub(crate) series_retention: Option<RawDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIncidents {
    pub(crate) enabled: Option<bool>,
    pub(crate) hold: Option<RawDuration>,
    pub(crate) gap: Option<RawDuration>,
    pub(crate) resolve_after: Option<RawDuration>,
    pub(crate) sustain: Option<RawDuration>,
    pub(crate) reopen_within: Option<RawDuration>,
    pub(crate) retention: Option<RawDuration>,
    pub(crate) max_open: Option<usize>,
    pub(crate) max_series: Option<usize>,
    pub(crate) group_by_namespace: Option<bool>,
    pub(crate) labels: Option<RawTopologyLabels>,
    pub(crate) external_url: Option<String>,
    pub(crate) silences_every: Option<RawDuration>,
    pub(crate) notify: Option<RawNotify>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTopologyLabels {
    pub(crate) namespace: Option<String>,
    pub(crate) service: Option<String>,
    pub(crate) deployment: Option<String>,
    pub(crate) pod: Option<String>,
    pub(crate) node: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNotify {
    pub(crate) alertmanager: Option<Vec<RawAlertmanager>>,
    pub(crate) slack: Option<Vec<RawSlack>>,
    pub(crate) webhook: Option<Vec<RawWebhook>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAlertmanager {
    pub(crate) url: String,
    pub(crate) labels: Option<BTreeMap<String, String>>,
    pub(crate) runbook_url: Option<String>,
    pub(crate) resend_every: Option<RawDuration>,
    pub(crate) headers: Option<BTreeMap<String, String>>,
    pub(crate) bearer_token: Option<String>,
    pub(crate) bearer_token_file: Option<String>,
    pub(crate) bearer_token_env: Option<String>,
    pub(crate) read_silences: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSlack {
    pub(crate) webhook_url: Option<String>,
    pub(crate) webhook_url_file: Option<String>,
    pub(crate) webhook_url_env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWebhook {
    pub(crate) url: String,
    pub(crate) headers: Option<BTreeMap<String, String>>,
    pub(crate) bearer_token: Option<String>,
    pub(crate) bearer_token_file: Option<String>,
    pub(crate) bearer_token_env: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawExplain {
    pub(crate) runbooks: Option<String>,
    pub(crate) pseudonymize: Option<bool>,
    pub(crate) kubernetes_events: Option<bool>,
    pub(crate) llm: Option<RawLlm>,
    pub(crate) loki: Option<RawLoki>,
    pub(crate) actions: Option<RawActions>,
    pub(crate) slack_signing_secret: Option<String>,
    pub(crate) slack_signing_secret_file: Option<String>,
    pub(crate) slack_signing_secret_env: Option<String>,
}

#[derive(Copy, Clone, Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RawLlmProvider {
    Anthropic,
    Openai,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLlm {
    pub(crate) provider: RawLlmProvider,
    pub(crate) url: Option<String>,
    pub(crate) model: String,
    pub(crate) api_key: Option<String>,
    pub(crate) api_key_file: Option<String>,
    pub(crate) api_key_env: Option<String>,
    pub(crate) max_tokens: Option<u32>,
    pub(crate) timeout: Option<RawDuration>,
    pub(crate) json_mode: Option<bool>,
    pub(crate) max_tokens_per_incident: Option<u64>,
    pub(crate) max_cost_per_incident: Option<f64>,
    pub(crate) input_price_per_mtok: Option<f64>,
    pub(crate) output_price_per_mtok: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLoki {
    pub(crate) url: String,
    pub(crate) tenant: Option<String>,
    pub(crate) bearer_token: Option<String>,
    pub(crate) bearer_token_file: Option<String>,
    pub(crate) bearer_token_env: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawActions {
    pub(crate) live: Option<bool>,
    #[serde(default)]
    pub(crate) webhooks: BTreeMap<String, RawActionWebhook>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawActionWebhook {
    pub(crate) url: String,
    pub(crate) bearer_token: Option<String>,
    pub(crate) bearer_token_file: Option<String>,
    pub(crate) bearer_token_env: Option<String>,
}
