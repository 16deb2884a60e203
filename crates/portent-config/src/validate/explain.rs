//! `explain`: runbooks, more evidence (Kubernetes events, Loki) and the LLM.

use super::{Validator, err, parse_url, positive};
use crate::config::{ActionWebhook, Actions, Explain, Llm, LlmProvider, Loki};
use crate::raw::{RawActions, RawExplain, RawLlm, RawLlmProvider, RawLoki};
use crate::{ConfigError, defaults};

type Result<T> = std::result::Result<T, ConfigError>;

/// A price or a cap: a finite number >= 0.
fn money(key: &str, v: Option<f64>, default: f64) -> Result<f64> {
    let v = v.unwrap_or(default);
    if !v.is_finite() || v < 0.0 {
        return err(key, format!("{v} is not a number >= 0"));
    }
    Ok(v)
}

impl Validator<'_> {
    pub(super) fn explain(&mut self, raw: RawExplain) -> Result<Explain> {
        let runbooks = match raw.runbooks {
            Some(p) => Some(self.existing_file("explain.runbooks", &p)?),
            None => None,
        };
        let llm = match raw.llm {
            Some(l) => Some(self.llm(l)?),
            None => None,
        };
        let loki = match raw.loki {
            Some(l) => Some(self.loki(l)?),
            None => None,
        };
        let actions = self.actions(raw.actions.unwrap_or_default())?;
        let pseudonymize = raw.pseudonymize.unwrap_or(defaults::PSEUDONYMIZE);
        if let Some(l) = &llm
            && !pseudonymize
            && !matches!(l.url.host_str(), Some("localhost" | "127.0.0.1" | "::1"))
        {
            self.warnings.push(format!(
                "explain.pseudonymize: off, so namespaces, pods, nodes and addresses are sent \
                 to {} as they are",
                l.url.host_str().unwrap_or("the LLM")
            ));
        }
        Ok(Explain {
            runbooks,
            pseudonymize,
            kubernetes_events: raw.kubernetes_events.unwrap_or(defaults::KUBERNETES_EVENTS),
            llm,
            loki,
            actions,
            slack_signing_secret: self.secret(
                "explain",
                "slack_signing_secret",
                raw.slack_signing_secret,
                raw.slack_signing_secret_file,
                raw.slack_signing_secret_env,
            )?,
        })
    }

    fn llm(&mut self, raw: RawLlm) -> Result<Llm> {
        let (provider, default_url) = match raw.provider {
            RawLlmProvider::Anthropic => (LlmProvider::Anthropic, defaults::ANTHROPIC_URL),
            RawLlmProvider::Openai => (LlmProvider::OpenAi, defaults::OPENAI_URL),
        };
        let url = parse_url("explain.llm.url", raw.url.as_deref().unwrap_or(default_url))?;
        if raw.model.trim().is_empty() {
            return err("explain.llm.model", "empty; name the model to ask");
        }
        let api_key = self.secret(
            "explain.llm",
            "api_key",
            raw.api_key,
            raw.api_key_file,
            raw.api_key_env,
        )?;
        if api_key.is_none() && provider == LlmProvider::Anthropic {
            return err(
                "explain.llm",
                "Anthropic needs a key: set api_key_file or api_key_env",
            );
        }
        let max_tokens = raw.max_tokens.unwrap_or(defaults::LLM_MAX_TOKENS);
        if max_tokens == 0 {
            return err("explain.llm.max_tokens", "must be at least 1");
        }
        let max_tokens_per_incident = raw
            .max_tokens_per_incident
            .unwrap_or(defaults::LLM_MAX_TOKENS_PER_INCIDENT);
        if max_tokens_per_incident < u64::from(max_tokens) {
            return err(
                "explain.llm.max_tokens_per_incident",
                format!(
                    "{max_tokens_per_incident} is less than max_tokens {max_tokens}: no call \
                     would fit"
                ),
            );
        }
        Ok(Llm {
            provider,
            url,
            model: raw.model,
            api_key,
            max_tokens,
            timeout: positive("explain.llm.timeout", raw.timeout, defaults::LLM_TIMEOUT)?,
            json_mode: raw.json_mode.unwrap_or(true),
            max_tokens_per_incident,
            max_cost_per_incident: money(
                "explain.llm.max_cost_per_incident",
                raw.max_cost_per_incident,
                defaults::LLM_MAX_COST_PER_INCIDENT,
            )?,
            input_price_per_mtok: money(
                "explain.llm.input_price_per_mtok",
                raw.input_price_per_mtok,
                0.0,
            )?,
            output_price_per_mtok: money(
                "explain.llm.output_price_per_mtok",
                raw.output_price_per_mtok,
                0.0,
            )?,
        })
    }

    fn actions(&mut self, raw: RawActions) -> Result<Actions> {
        let mut webhooks = std::collections::BTreeMap::new();
        for (name, w) in raw.webhooks {
            let key = format!("explain.actions.webhooks.{name}");
            if name.trim().is_empty() {
                return err("explain.actions.webhooks", "a webhook needs a name");
            }
            let hook = ActionWebhook {
                url: parse_url(&format!("{key}.url"), &w.url)?,
                bearer_token: self.secret(
                    &key,
                    "bearer_token",
                    w.bearer_token,
                    w.bearer_token_file,
                    w.bearer_token_env,
                )?,
            };
            webhooks.insert(name, hook);
        }
        let live = raw.live.unwrap_or(defaults::ACTIONS_LIVE);
        if live && webhooks.is_empty() {
            self.warnings.push(
                "explain.actions.live: on, but no webhooks are configured, so no action can run"
                    .into(),
            );
        }
        Ok(Actions { live, webhooks })
    }

    fn loki(&mut self, raw: RawLoki) -> Result<Loki> {
        Ok(Loki {
            url: parse_url("explain.loki.url", &raw.url)?,
            tenant: raw.tenant.filter(|t| !t.is_empty()),
            bearer_token: self.secret(
                "explain.loki",
                "bearer_token",
                raw.bearer_token,
                raw.bearer_token_file,
                raw.bearer_token_env,
            )?,
        })
    }
}
