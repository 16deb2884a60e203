//! The crate's error type.

/// What can go wrong while gathering evidence, asking a model, loading runbooks or running
/// their actions. Messages are short, lowercase and prefixed with their context; none of them
/// ever carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A key could not be read.
    #[error("secret: {0}")]
    Secret(String),
    /// The Kubernetes API failed.
    #[error("kubernetes events: {0}")]
    Kube(String),
    /// Loki failed.
    #[error("loki: {0}")]
    Loki(String),
    /// The model's endpoint failed (transport, status or body).
    #[error("llm: {0}")]
    Llm(String),
    /// The model answered, but not in the required shape.
    #[error("answer: {0}")]
    Answer(String),
    /// The per-incident token or cost cap would be exceeded.
    #[error("budget: {0}")]
    Budget(String),
    /// The runbook catalogue is invalid.
    #[error("runbooks: {0}")]
    Runbook(String),
    /// A configuration value is invalid.
    #[error("config: {0}")]
    Config(String),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
