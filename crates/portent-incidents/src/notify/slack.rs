//! Slack incoming webhooks: a Block Kit message per state change.

use serde_json::{Value, json};

use super::Notification;
use crate::correlate::State;
use crate::pack::EvidencePack;

/// Where to post, and how to link to charts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlackConfig {
    /// The incoming webhook URL (a secret: keep it out of logs).
    pub url: String,
    /// The base URL of a chart page, e.g. portent's UI `http://portent:9410/chart`; the link
    /// adds `series` (the top candidate's selector), `from` and `to` (milliseconds) as query
    /// parameters. No link when `None`.
    pub chart_base_url: Option<String>,
}

/// Slack's mrkdwn needs `&`, `<` and `>` escaped.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
}

/// The chart link for a pack: the top series from 30 minutes before the onset to 30 minutes
/// after the end (or the latest anomaly).
pub fn chart_link(base: &str, pack: &EvidencePack) -> Option<String> {
    let top = pack.series.first()?;
    let inc = &pack.incident;
    let from = inc.started_at.ms.saturating_sub(30 * 60_000);
    let end = inc.resolved_at.as_ref().unwrap_or(&inc.last_anomaly_at).ms;
    let to = end.saturating_add(30 * 60_000);
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("series", &top.series)
        .append_pair("from", &from.to_string())
        .append_pair("to", &to.to_string())
        .finish();
    let sep = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{sep}{query}"))
}

/// The webhook body: `text` (the notification fallback) and `blocks` (header, explanation,
/// top candidates, chart button, context).
pub fn slack_payload(config: &SlackConfig, n: &Notification<'_>) -> Value {
    let pack = n.pack;
    let inc = &pack.incident;
    let title = match inc.state {
        State::Firing => format!("Firing: incident {}", inc.id),
        State::Resolved => format!("Resolved: incident {}", inc.id),
        State::Pending => format!("Pending: incident {}", inc.id),
    };
    let mut candidates = String::from("*Most likely causes*");
    for (i, c) in pack.candidates.iter().take(3).enumerate() {
        let series = pack
            .series
            .iter()
            .find(|s| s.id == c.evidence_id)
            .map_or("", |s| s.series.as_str());
        candidates.push_str(&format!(
            "\n{}. [{}] `{}` ({}, rank {:.2})",
            i + 1,
            c.evidence_id,
            esc(series),
            c.level,
            c.rank
        ));
    }
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": cut(&title, 150)}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": cut(&esc(n.explanation), 3000)}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": cut(&candidates, 3000)}}),
    ];
    if let Some(link) = config
        .chart_base_url
        .as_deref()
        .and_then(|b| chart_link(b, pack))
    {
        blocks.push(json!({"type": "actions", "elements": [{
            "type": "button",
            "text": {"type": "plain_text", "text": "Chart"},
            "url": link,
        }]}));
    }
    blocks.push(json!({"type": "context", "elements": [{
        "type": "mrkdwn",
        "text": format!("portent · started {}", inc.started_at.iso),
    }]}));
    json!({ "text": title, "blocks": blocks })
}
