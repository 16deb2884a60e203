//! Generic JSON webhooks: the state, the explanation and the whole evidence pack.

use serde_json::{Value, json};

use super::{Kind, Notification};

/// Where to post.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookConfig {
    /// The URL.
    pub url: String,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// A bearer token, sent as `Authorization: Bearer …`.
    pub bearer: Option<String>,
}

impl WebhookConfig {
    /// A webhook to `url` with no extra headers.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            headers: Vec::new(),
            bearer: None,
        }
    }
}

/// The body: `{"version": "1", "kind": "portent.incident", "incident", "state", "refresh",
/// "explanation", "pack"}`, plus `explained` (structured detail) when the explanation was made
/// outside this crate.
pub fn webhook_payload(n: &Notification<'_>) -> Value {
    let mut body = json!({
        "version": "1",
        "kind": "portent.incident",
        "incident": n.pack.incident.id,
        "state": n.pack.incident.state,
        "refresh": n.kind == Kind::Refresh,
        "explanation": n.explanation,
        "pack": n.pack,
    });
    if let (Some(detail), Some(obj)) = (
        n.explained.and_then(|e| e.detail.clone()),
        body.as_object_mut(),
    ) {
        obj.insert("explained".into(), detail);
    }
    body
}
