//! LLM providers: the Anthropic Messages API and OpenAI-compatible chat completions.
//!
//! [`LlmClient::chat`] sends one conversation and returns the text and token usage. It retries
//! transport errors, 429 and 5xx with exponential backoff (honouring `Retry-After` up to a
//! limit) and fails fast on other statuses. Keys live in [`Secret`]s, so the client's `Debug`
//! and every log line and error stay free of them; error messages carry the status only, not
//! the response body, which some servers fill with request details.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::secret::Secret;

/// Which wire format the endpoint speaks.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// `POST /v1/messages` with `x-api-key` and `anthropic-version: 2023-06-01`.
    Anthropic,
    /// `POST /v1/chat/completions` with `Authorization: Bearer` (OpenAI, vLLM, Ollama,
    /// llama.cpp server).
    OpenAi,
}

/// Per-incident spending limits, counted over every call made for one incident (both
/// attempts of an explanation, and later re-explanations as it evolves).
#[derive(Clone, Debug, PartialEq)]
pub struct Budget {
    /// Input plus output tokens (default 40 000).
    pub max_tokens: u64,
    /// US dollars (default 0.25); only enforced when prices are set.
    pub max_cost: f64,
    /// US dollars per million input tokens (default 0: unknown, e.g. a local model).
    pub input_price_per_mtok: f64,
    /// US dollars per million output tokens (default 0).
    pub output_price_per_mtok: f64,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            max_tokens: 40_000,
            max_cost: 0.25,
            input_price_per_mtok: 0.0,
            output_price_per_mtok: 0.0,
        }
    }
}

impl Budget {
    /// The cost of a call with these token counts.
    pub fn cost(&self, input: u64, output: u64) -> f64 {
        (input as f64 * self.input_price_per_mtok + output as f64 * self.output_price_per_mtok)
            / 1e6
    }
}

/// How to reach a model.
#[derive(Clone, Debug)]
pub struct LlmConfig {
    /// The wire format.
    pub provider: ProviderKind,
    /// The base URL, with or without a trailing `/v1` (`https://api.anthropic.com`,
    /// `http://localhost:11434/v1`).
    pub base_url: String,
    /// The model name.
    pub model: String,
    /// The key; optional for local OpenAI-compatible servers.
    pub api_key: Option<Secret>,
    /// The most output tokens per call (default 1024).
    pub max_tokens: u32,
    /// Time limit per HTTP attempt (default 60 s).
    pub timeout: Duration,
    /// Retries after the first attempt on transport errors, 429 and 5xx (default 2).
    pub max_retries: u32,
    /// The first backoff, doubled per retry (default 1 s).
    pub backoff: Duration,
    /// The longest wait between attempts, whatever `Retry-After` says (default 20 s).
    pub max_backoff: Duration,
    /// Ask an OpenAI-compatible server for `response_format: {"type": "json_object"}`
    /// (default true; turn off for servers that reject it).
    pub json_mode: bool,
    /// The per-incident budget.
    pub budget: Budget,
}

impl LlmConfig {
    /// The defaults for `provider` at `base_url` with `model`.
    pub fn new(
        provider: ProviderKind,
        base_url: impl Into<String>,
        model: impl Into<String>,
    ) -> Self {
        Self {
            provider,
            base_url: base_url.into(),
            model: model.into(),
            api_key: None,
            max_tokens: 1024,
            timeout: Duration::from_secs(60),
            max_retries: 2,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(20),
            json_mode: true,
            budget: Budget::default(),
        }
    }

    /// The endpoint URL.
    pub fn endpoint(&self) -> String {
        let base = self.base_url.trim_end_matches('/');
        let base = base.strip_suffix("/v1").unwrap_or(base);
        match self.provider {
            ProviderKind::Anthropic => format!("{base}/v1/messages"),
            ProviderKind::OpenAi => format!("{base}/v1/chat/completions"),
        }
    }
}

/// Who said a message.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// portent.
    User,
    /// The model.
    Assistant,
}

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Who.
    pub role: Role,
    /// What.
    pub content: String,
}

/// A model's reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The reply's text.
    pub text: String,
    /// Input tokens billed.
    pub input_tokens: u64,
    /// Output tokens billed.
    pub output_tokens: u64,
}

/// A client for one configured model.
#[derive(Clone, Debug)]
pub struct LlmClient {
    http: reqwest::Client,
    config: LlmConfig,
}

#[derive(Deserialize)]
struct AnthropicResponse {
    content: Vec<AnthropicBlock>,
    #[serde(default)]
    usage: AnthropicUsage,
}

#[derive(Deserialize)]
struct AnthropicBlock {
    #[serde(rename = "type")]
    type_: String,
    #[serde(default)]
    text: String,
}

#[derive(Deserialize, Default)]
struct AnthropicUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
}

#[derive(Deserialize)]
struct OpenAiResponse {
    choices: Vec<OpenAiChoice>,
    #[serde(default)]
    usage: OpenAiUsage,
}

#[derive(Deserialize)]
struct OpenAiChoice {
    message: OpenAiMessage,
}

#[derive(Deserialize)]
struct OpenAiMessage {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize, Default)]
struct OpenAiUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

impl LlmClient {
    /// A client for `config`.
    pub fn new(config: LlmConfig) -> Result<Self> {
        if config.model.trim().is_empty() {
            return Err(Error::Config("llm: model is empty".into()));
        }
        if config.provider == ProviderKind::Anthropic && config.api_key.is_none() {
            return Err(Error::Config("llm: the Anthropic API needs a key".into()));
        }
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| Error::Llm(e.to_string()))?;
        Ok(Self { http, config })
    }

    /// Its configuration.
    pub fn config(&self) -> &LlmConfig {
        &self.config
    }

    /// The request body for `system` and `messages`.
    pub fn body(&self, system: &str, messages: &[Message]) -> serde_json::Value {
        let c = &self.config;
        match c.provider {
            ProviderKind::Anthropic => serde_json::json!({
                "model": c.model,
                "max_tokens": c.max_tokens,
                "temperature": 0,
                "system": system,
                "messages": messages,
            }),
            ProviderKind::OpenAi => {
                let mut all = vec![serde_json::json!({"role": "system", "content": system})];
                all.extend(messages.iter().filter_map(|m| serde_json::to_value(m).ok()));
                let mut body = serde_json::json!({
                    "model": c.model,
                    "max_tokens": c.max_tokens,
                    "temperature": 0,
                    "messages": all,
                });
                if c.json_mode {
                    body["response_format"] = serde_json::json!({"type": "json_object"});
                }
                body
            }
        }
    }

    /// Sends one conversation; see the [module docs](self) for retries.
    pub async fn chat(&self, system: &str, messages: &[Message]) -> Result<Completion> {
        let c = &self.config;
        let body = self.body(system, messages);
        let url = c.endpoint();
        let mut attempt = 0;
        loop {
            let mut req = self.http.post(&url).json(&body);
            req = match (c.provider, &c.api_key) {
                (ProviderKind::Anthropic, key) => {
                    let req = req.header("anthropic-version", "2023-06-01");
                    match key {
                        Some(k) => req.header("x-api-key", k.expose()),
                        None => req,
                    }
                }
                (ProviderKind::OpenAi, Some(k)) => req.bearer_auth(k.expose()),
                (ProviderKind::OpenAi, None) => req,
            };
            let (retryable, err, wait) = match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    tracing::debug!(provider = ?c.provider, model = %c.model, attempt, status = status.as_u16(), "llm: response");
                    if status.is_success() {
                        return self.decode(resp).await;
                    }
                    let retry_after = resp
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let code = status.as_u16();
                    (
                        code == 429 || status.is_server_error(),
                        Error::Llm(format!("status {code}")),
                        retry_after,
                    )
                }
                // Without the URL: a misconfigured one could carry credentials.
                Err(e) => (true, Error::Llm(e.without_url().to_string()), None),
            };
            if !retryable || attempt >= c.max_retries {
                tracing::warn!(provider = ?c.provider, model = %c.model, attempts = attempt + 1, error = %err, "llm: giving up");
                return Err(err);
            }
            let backoff = c.backoff.saturating_mul(2u32.saturating_pow(attempt));
            let wait = wait.unwrap_or(backoff).min(c.max_backoff);
            tracing::debug!(provider = ?c.provider, attempt, error = %err, wait_ms = wait.as_millis() as u64, "llm: retrying");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    async fn decode(&self, resp: reqwest::Response) -> Result<Completion> {
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| Error::Llm(format!("response: {}", e.without_url())))?;
        match self.config.provider {
            ProviderKind::Anthropic => {
                let r: AnthropicResponse = serde_json::from_slice(&bytes)
                    .map_err(|e| Error::Llm(format!("response: {e}")))?;
                let text: String = r
                    .content
                    .iter()
                    .filter(|b| b.type_ == "text")
                    .map(|b| b.text.as_str())
                    .collect();
                Ok(Completion {
                    text,
                    input_tokens: r.usage.input_tokens,
                    output_tokens: r.usage.output_tokens,
                })
            }
            ProviderKind::OpenAi => {
                let r: OpenAiResponse = serde_json::from_slice(&bytes)
                    .map_err(|e| Error::Llm(format!("response: {e}")))?;
                let text = r
                    .choices
                    .into_iter()
                    .next()
                    .and_then(|c| c.message.content)
                    .ok_or_else(|| Error::Llm("response: no choices".into()))?;
                Ok(Completion {
                    text,
                    input_tokens: r.usage.prompt_tokens,
                    output_tokens: r.usage.completion_tokens,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_with_or_without_v1() {
        let a = LlmConfig::new(ProviderKind::Anthropic, "https://api.anthropic.com/", "m");
        assert_eq!(a.endpoint(), "https://api.anthropic.com/v1/messages");
        let o = LlmConfig::new(ProviderKind::OpenAi, "http://localhost:11434/v1", "m");
        assert_eq!(o.endpoint(), "http://localhost:11434/v1/chat/completions");
    }

    #[test]
    fn debug_redacts_the_key() {
        let mut c = LlmConfig::new(ProviderKind::Anthropic, "http://127.0.0.1:1", "m");
        c.api_key = Some(Secret::new("sk-ant-123456"));
        let client = LlmClient::new(c);
        let dbg = format!("{client:?}");
        assert!(!dbg.contains("sk-ant-123456"), "{dbg}");
        assert!(dbg.contains("<redacted>"));
    }

    #[test]
    fn cost() {
        let b = Budget {
            input_price_per_mtok: 3.0,
            output_price_per_mtok: 15.0,
            ..Budget::default()
        };
        assert!((b.cost(1_000_000, 100_000) - 4.5).abs() < 1e-9);
    }
}
