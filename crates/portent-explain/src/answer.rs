//! The model's answer: one fixed JSON shape, validated before anyone sees it.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::evidence::clip;

/// What a model must answer. portent shows it as text and never acts on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// What is happening, in a sentence or three.
    pub summary: String,
    /// The likely cause.
    pub likely_cause: String,
    /// The evidence IDs the answer relies on; each is one the prompt contained.
    pub evidence_ids: Vec<String>,
    /// Suggested actions for a human.
    pub actions: Vec<String>,
}

/// Bytes kept of the summary.
pub const MAX_SUMMARY: usize = 1500;
/// Bytes kept of the likely cause.
pub const MAX_CAUSE: usize = 800;
/// Actions kept, and bytes of each.
pub const MAX_ACTIONS: (usize, usize) = (8, 400);

/// The JSON object in `text`: the text itself, or inside a Markdown code fence, or between its
/// first `{` and last `}` (models like to add a sentence around it).
fn json_object(text: &str) -> Option<&str> {
    let t = text.trim();
    let start = t.find('{')?;
    let end = t.rfind('}')?;
    (start < end).then(|| &t[start..=end])
}

/// `text` parsed as an [`Answer`] citing only `known` evidence IDs. Long fields are clipped;
/// a missing or mistyped field, an empty summary, no evidence ID or an unknown one is an
/// error whose message is fit to send back to the model.
pub fn parse(text: &str, known: &BTreeSet<String>) -> Result<Answer> {
    let obj =
        json_object(text).ok_or_else(|| Error::Answer("no JSON object in the answer".into()))?;
    let v: serde_json::Value =
        serde_json::from_str(obj).map_err(|e| Error::Answer(format!("not valid JSON: {e}")))?;
    let o = v
        .as_object()
        .ok_or_else(|| Error::Answer("the answer is not a JSON object".into()))?;
    let string = |k: &str| -> Result<String> {
        match o.get(k) {
            Some(serde_json::Value::String(s)) => Ok(s.trim().to_owned()),
            Some(_) => Err(Error::Answer(format!("`{k}` must be a string"))),
            None => Err(Error::Answer(format!("missing field `{k}`"))),
        }
    };
    let strings = |k: &str| -> Result<Vec<String>> {
        match o.get(k) {
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(|s| s.trim().to_owned())
                        .ok_or_else(|| Error::Answer(format!("`{k}` must be a list of strings")))
                })
                .collect(),
            Some(_) => Err(Error::Answer(format!("`{k}` must be a list of strings"))),
            None => Err(Error::Answer(format!("missing field `{k}`"))),
        }
    };
    let summary = string("summary")?;
    let likely_cause = string("likely_cause")?;
    let mut evidence_ids = strings("evidence_ids")?;
    let actions = strings("actions")?;
    if summary.is_empty() {
        return Err(Error::Answer("`summary` is empty".into()));
    }
    let mut seen = BTreeSet::new();
    evidence_ids.retain(|id| seen.insert(id.clone()));
    if evidence_ids.is_empty() {
        return Err(Error::Answer(
            "`evidence_ids` is empty; cite the evidence the answer relies on".into(),
        ));
    }
    let unknown: Vec<&str> = evidence_ids
        .iter()
        .filter(|id| !known.contains(*id))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        let known: Vec<&str> = known.iter().map(String::as_str).take(40).collect();
        return Err(Error::Answer(format!(
            "unknown evidence IDs {}; the evidence has {}",
            unknown.join(", "),
            known.join(", ")
        )));
    }
    Ok(Answer {
        summary: clip(&summary, MAX_SUMMARY),
        likely_cause: clip(&likely_cause, MAX_CAUSE),
        evidence_ids,
        actions: actions
            .iter()
            .filter(|a| !a.is_empty())
            .take(MAX_ACTIONS.0)
            .map(|a| clip(a, MAX_ACTIONS.1))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> BTreeSet<String> {
        ["e1", "e2", "k1", "l1"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn accepts_a_fenced_answer() {
        let text = "Here you go:\n```json\n{\"summary\":\"s\",\"likely_cause\":\"c\",\"evidence_ids\":[\"e1\",\"k1\",\"e1\"],\"actions\":[\"a\",\"\"]}\n```";
        let a = parse(text, &known());
        assert_eq!(
            a.ok(),
            Some(Answer {
                summary: "s".into(),
                likely_cause: "c".into(),
                evidence_ids: vec!["e1".into(), "k1".into()],
                actions: vec!["a".into()],
            })
        );
    }

    #[test]
    fn rejects_with_messages_for_the_model() {
        let err = |t: &str| {
            parse(t, &known())
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert_eq!(err("nope"), "answer: no JSON object in the answer");
        assert_eq!(
            err("{\"summary\":\"s\",\"likely_cause\":\"c\",\"actions\":[]}"),
            "answer: missing field `evidence_ids`"
        );
        assert_eq!(
            err(
                "{\"summary\":\"s\",\"likely_cause\":\"c\",\"evidence_ids\":[\"e9\"],\"actions\":[]}"
            ),
            "answer: unknown evidence IDs e9; the evidence has e1, e2, k1, l1"
        );
        assert_eq!(
            err("{\"summary\":1,\"likely_cause\":\"c\",\"evidence_ids\":[\"e1\"],\"actions\":[]}"),
            "answer: `summary` must be a string"
        );
    }
}
