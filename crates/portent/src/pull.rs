//! The pull source shared by `serve` and `backtest`: the config's `source.pull` endpoint as a
//! Prometheus API client, and that client as the engine's synchronous [`HistorySource`].

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use portent_config::{Config, Endpoint};
use portent_core::Series;
use portent_engine::{HistorySource, RangeQuery};
use portent_prom::{Auth, Client, ClientConfig, ClientError, RetryPolicy, TlsConfig};
use tokio::runtime::Handle;

/// The pull source's client settings, from the config's endpoint.
///
/// `tls.server_name` has no counterpart in [`ClientConfig`] yet: it is ignored with a warning.
pub(crate) fn client_config(endpoint: &Endpoint) -> ClientConfig {
    let mut c = ClientConfig::new(endpoint.url.as_str());
    c.auth = endpoint.auth.as_ref().map(|a| match a {
        portent_config::Auth::Bearer(t) => Auth::Bearer(t.expose().to_owned()),
        portent_config::Auth::Basic { username, password } => Auth::Basic {
            username: username.clone(),
            password: password.expose().to_owned(),
        },
    });
    c.headers = endpoint
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    c.tls = TlsConfig {
        ca_file: endpoint.tls.ca_file.clone(),
        cert_file: endpoint
            .tls
            .client_cert
            .as_ref()
            .map(|c| c.cert_file.clone()),
        key_file: endpoint
            .tls
            .client_cert
            .as_ref()
            .map(|c| c.key_file.clone()),
        insecure_skip_verify: endpoint.tls.insecure_skip_verify,
    };
    c.timeout = endpoint.timeout;
    c.retry = RetryPolicy {
        max_attempts: endpoint.retries.max.saturating_add(1),
        initial_backoff: endpoint.retries.initial_backoff,
        max_backoff: endpoint.retries.max_backoff,
        ..RetryPolicy::default()
    };
    c
}

/// A client for the config's pull source.
pub(crate) fn pull_client(config: &Config) -> Result<Client> {
    let pull = config
        .source
        .pull
        .as_ref()
        .ok_or_else(|| anyhow!("source.pull is not set: `portent serve` only pulls for now"))?;
    if pull.endpoint.tls.server_name.is_some() {
        eprintln!("portent: warning: source.pull.tls.server_name is not supported yet, ignored");
    }
    let client = Client::new(&client_config(&pull.endpoint)).context("source.pull")?;
    let points = usize::try_from(pull.max_points_per_series).unwrap_or(usize::MAX);
    client
        .with_max_points_per_series(points)
        .context("source.pull.max_points_per_series")
}

/// The engine's synchronous source over the async client: run on a blocking thread.
pub(crate) struct PullSource {
    pub(crate) client: Arc<Client>,
    pub(crate) handle: Handle,
}

impl HistorySource for PullSource {
    type Error = ClientError;

    fn query_range(&mut self, q: &RangeQuery<'_>) -> Result<Vec<Series>, ClientError> {
        let step = Duration::from_millis(u64::try_from(q.step_ms).unwrap_or(1));
        self.handle
            .block_on(self.client.query_range(q.expr, q.start, q.end, step))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn client_config_maps_every_endpoint_setting() {
        let yaml = "source:
  pull:
    url: https://mimir.example.com/prometheus
    auth:
      basic_auth:
        username: portent
        password: hunter2
    headers:
      X-Scope-OrgID: team-a
    tls:
      insecure_skip_verify: true
    timeout: 7s
    retries:
      max: 2
      initial_backoff: 100ms
      max_backoff: 3s
queries:
  up:
    expr: up
";
        let config = Config::from_yaml(yaml, Path::new(".")).unwrap();
        let c = client_config(&config.source.pull.as_ref().unwrap().endpoint);
        assert_eq!(c.url, "https://mimir.example.com/prometheus");
        assert!(matches!(
            c.auth,
            Some(Auth::Basic { ref username, ref password })
                if username == "portent" && password == "hunter2"
        ));
        assert_eq!(
            c.headers,
            [("X-Scope-OrgID".to_owned(), "team-a".to_owned())]
        );
        assert!(c.tls.insecure_skip_verify);
        assert_eq!(c.timeout, Duration::from_secs(7));
        assert_eq!(c.retry.max_attempts, 3);
        assert_eq!(c.retry.initial_backoff, Duration::from_millis(100));
        assert_eq!(c.retry.max_backoff, Duration::from_secs(3));
        // The URL as written, usable by the client.
        assert!(Client::new(&c).is_ok());
    }
}
