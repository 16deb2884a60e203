#![doc = include_str!("../README.md")]

pub mod answer;
pub mod ask;
pub mod error;
pub mod evidence;
pub mod explain;
pub mod labels;
pub mod llm;
pub mod prompt;
pub mod pseudo;
pub mod runbook;
pub mod secret;
pub mod slack;

pub use answer::Answer;
pub use ask::{TopScore, answer_deterministic};
pub use error::{Error, Result};
pub use evidence::{EventSource, EventsConfig, KubeEvent, LogLine, LokiConfig, LokiSource, attach};
pub use explain::{Explainer, ExplainerConfig, Explanation, Outcome, Usage};
pub use llm::{Budget, LlmClient, LlmConfig, ProviderKind};
pub use pseudo::Pseudonymiser;
pub use runbook::{ActionOutcome, ActionRunner, ActionStatus, Catalogue, RunbookMatch, Webhook};
pub use secret::Secret;
pub use slack::{SlackError, SlashCommand, channel_response, verify as verify_slack};
