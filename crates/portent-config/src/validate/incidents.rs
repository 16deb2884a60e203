//! `incidents`: grouping, topology labels and where incidents are sent.

use std::collections::BTreeMap;

use super::{Validator, err, headers_of, parse_url, positive};
use crate::config::{AlertmanagerNotify, Incidents, SlackNotify, TopologyLabels, WebhookNotify};
use crate::raw::{RawAlertmanager, RawIncidents, RawSlack, RawTopologyLabels, RawWebhook};
use crate::{ConfigError, defaults};

type Result<T> = std::result::Result<T, ConfigError>;

/// Labels portent sets on every incident alert itself.
const OWN_ALERT_LABELS: [&str; 2] = ["alertname", "incident"];

/// A Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
fn label_name(key: &str, name: &str) -> Result<()> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        return err(
            key,
            format!(
                "{name:?} is not a label name: letters, digits and _, not starting with a digit"
            ),
        );
    }
    Ok(())
}

fn count(key: &str, n: Option<usize>, default: usize) -> Result<usize> {
    let n = n.unwrap_or(default);
    if n == 0 {
        return err(key, "must be at least 1");
    }
    Ok(n)
}

impl Validator<'_> {
    pub(super) fn incidents(&mut self, raw: RawIncidents) -> Result<Incidents> {
        let d = |key: &str, v, default| positive(&format!("incidents.{key}"), v, default);
        let hold = raw.hold.map_or(defaults::INCIDENT_HOLD, |h| h.0);
        let gap = d("gap", raw.gap, defaults::INCIDENT_GAP)?;
        let resolve_after = d(
            "resolve_after",
            raw.resolve_after,
            defaults::INCIDENT_RESOLVE_AFTER,
        )?;
        // Zero is allowed: it turns sustained deviation off.
        let sustain = raw.sustain.map_or(defaults::INCIDENT_SUSTAIN, |s| s.0);
        let reopen_within = raw
            .reopen_within
            .map_or(defaults::INCIDENT_REOPEN_WITHIN, |s| s.0);
        let retention = d("retention", raw.retention, defaults::INCIDENT_RETENTION)?;
        let silences_every = d(
            "silences_every",
            raw.silences_every,
            defaults::SILENCES_EVERY,
        )?;
        let external_url = match raw.external_url {
            Some(u) => Some(parse_url("incidents.external_url", &u)?),
            None => None,
        };
        let notify = raw.notify.unwrap_or_default();
        let alertmanager = notify
            .alertmanager
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, a)| self.alertmanager(&format!("incidents.notify.alertmanager[{i}]"), a))
            .collect::<Result<Vec<_>>>()?;
        let slack = notify
            .slack
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, s)| self.slack(&format!("incidents.notify.slack[{i}]"), s))
            .collect::<Result<Vec<_>>>()?;
        let webhook = notify
            .webhook
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, w)| self.webhook(&format!("incidents.notify.webhook[{i}]"), w))
            .collect::<Result<Vec<_>>>()?;
        let enabled = raw.enabled.unwrap_or(defaults::INCIDENTS_ENABLED);
        if !enabled && (!alertmanager.is_empty() || !slack.is_empty() || !webhook.is_empty()) {
            self.warnings.push(
                "incidents.notify: incidents.enabled is false, so nothing is sent".to_owned(),
            );
        }
        Ok(Incidents {
            enabled,
            hold,
            gap,
            resolve_after,
            sustain,
            reopen_within,
            retention,
            max_open: count(
                "incidents.max_open",
                raw.max_open,
                defaults::INCIDENT_MAX_OPEN,
            )?,
            max_series: count(
                "incidents.max_series",
                raw.max_series,
                defaults::INCIDENT_MAX_SERIES,
            )?,
            group_by_namespace: raw
                .group_by_namespace
                .unwrap_or(defaults::INCIDENT_GROUP_BY_NAMESPACE),
            labels: topology(raw.labels.unwrap_or_default())?,
            external_url,
            silences_every,
            alertmanager,
            slack,
            webhook,
        })
    }

    fn alertmanager(&mut self, key: &str, raw: RawAlertmanager) -> Result<AlertmanagerNotify> {
        let url = parse_url(&format!("{key}.url"), &raw.url)?;
        let labels = match raw.labels {
            Some(l) => l,
            None => BTreeMap::from([("severity".to_owned(), "warning".to_owned())]),
        };
        for name in labels.keys() {
            let k = format!("{key}.labels.{name}");
            label_name(&k, name)?;
            if OWN_ALERT_LABELS.contains(&name.as_str()) {
                return err(
                    k,
                    "set by portent on every incident alert; choose another name",
                );
            }
        }
        let resend_every = positive(
            &format!("{key}.resend_every"),
            raw.resend_every,
            defaults::ALERTMANAGER_RESEND_EVERY,
        )?;
        let headers = headers_of(&format!("{key}.headers"), raw.headers.unwrap_or_default())?;
        let bearer_token = self.secret(
            key,
            "bearer_token",
            raw.bearer_token,
            raw.bearer_token_file,
            raw.bearer_token_env,
        )?;
        Ok(AlertmanagerNotify {
            url,
            labels,
            runbook_url: raw.runbook_url.filter(|u| !u.is_empty()),
            resend_every,
            headers,
            bearer_token,
            read_silences: raw.read_silences.unwrap_or(true),
        })
    }

    fn slack(&mut self, key: &str, raw: RawSlack) -> Result<SlackNotify> {
        let Some(webhook_url) = self.secret(
            key,
            "webhook_url",
            raw.webhook_url,
            raw.webhook_url_file,
            raw.webhook_url_env,
        )?
        else {
            return err(
                key,
                "set webhook_url_file or webhook_url_env (or webhook_url) to the incoming \
                 webhook's URL",
            );
        };
        // Checked for shape only: the URL is a secret and never shown.
        if parse_url(&format!("{key}.webhook_url"), webhook_url.expose()).is_err() {
            return err(
                format!("{key}.webhook_url"),
                "not an http(s) URL (value not shown: it is a secret)",
            );
        }
        Ok(SlackNotify { webhook_url })
    }

    fn webhook(&mut self, key: &str, raw: RawWebhook) -> Result<WebhookNotify> {
        Ok(WebhookNotify {
            url: parse_url(&format!("{key}.url"), &raw.url)?,
            headers: headers_of(&format!("{key}.headers"), raw.headers.unwrap_or_default())?,
            bearer_token: self.secret(
                key,
                "bearer_token",
                raw.bearer_token,
                raw.bearer_token_file,
                raw.bearer_token_env,
            )?,
        })
    }
}

fn topology(raw: RawTopologyLabels) -> Result<TopologyLabels> {
    let [ns, svc, dep, pod, node] = defaults::TOPOLOGY_LABELS;
    let one = |(key, default): (&str, &str), v: Option<String>| -> Result<String> {
        let v = v.unwrap_or_else(|| default.to_owned());
        label_name(&format!("incidents.labels.{key}"), &v)?;
        Ok(v)
    };
    Ok(TopologyLabels {
        namespace: one(ns, raw.namespace)?,
        service: one(svc, raw.service)?,
        deployment: one(dep, raw.deployment)?,
        pod: one(pod, raw.pod)?,
        node: one(node, raw.node)?,
    })
}
