//! Slack slash commands: request signature verification and channel answers.
//!
//! Slack signs each request with the app's signing secret: header `X-Slack-Signature` is
//! `v0=` and the hex HMAC-SHA256 of `v0:{X-Slack-Request-Timestamp}:{raw body}`. A request
//! whose timestamp is more than five minutes from now is refused whatever its signature, so a
//! captured request cannot be replayed later; the MAC comparison is constant-time.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::evidence::clip;
use crate::secret::Secret;

/// The most a timestamp may differ from now, in seconds.
pub const MAX_SKEW_SECS: i64 = 5 * 60;

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlackError {
    /// The timestamp header is not a number.
    #[error("slack: bad timestamp")]
    BadTimestamp,
    /// The timestamp is too far from now.
    #[error("slack: stale timestamp ({age_secs} s from now)")]
    Stale {
        /// How far, in seconds.
        age_secs: i64,
    },
    /// The signature is malformed or does not match.
    #[error("slack: bad signature")]
    BadSignature,
}

fn mac(secret: &Secret, timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length, so this cannot fail; a fresh empty-key MAC is a
    // harmless stand-in that can never match a real signature.
    let mut m = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
        .or_else(|_| Hmac::<Sha256>::new_from_slice(b"\0"))
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    m.update(b"v0:");
    m.update(timestamp.as_bytes());
    m.update(b":");
    m.update(body);
    m
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// The `X-Slack-Signature` value for `timestamp` and `body` (for tests and clients).
pub fn sign(secret: &Secret, timestamp: &str, body: &[u8]) -> String {
    format!(
        "v0={}",
        hex(&mac(secret, timestamp, body).finalize().into_bytes())
    )
}

/// Checks a request: its `X-Slack-Request-Timestamp`, `X-Slack-Signature` and raw body,
/// against `secret` at `now_unix` seconds.
pub fn verify(
    secret: &Secret,
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now_unix: i64,
) -> Result<(), SlackError> {
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SlackError::BadTimestamp)?;
    let age = now_unix.saturating_sub(ts);
    if age.saturating_abs() > MAX_SKEW_SECS {
        return Err(SlackError::Stale { age_secs: age });
    }
    let given = signature
        .strip_prefix("v0=")
        .and_then(unhex)
        .ok_or(SlackError::BadSignature)?;
    mac(secret, timestamp.trim(), body)
        .verify_slice(&given)
        .map_err(|_| SlackError::BadSignature)
}

/// A slash command's form fields that matter here.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlashCommand {
    /// The command (`/portent`).
    pub command: String,
    /// What was typed after it.
    pub text: String,
    /// Who typed it.
    pub user_name: String,
    /// Where.
    pub channel_id: String,
    /// Where delayed answers go.
    pub response_url: String,
}

/// The longest question taken from Slack, in bytes.
pub const MAX_QUESTION: usize = 500;

impl SlashCommand {
    /// The command in an `application/x-www-form-urlencoded` body.
    pub fn parse(body: &str) -> Self {
        let mut c = Self::default();
        for (k, v) in form_urlencoded::parse(body.as_bytes()) {
            let slot = match &*k {
                "command" => &mut c.command,
                "text" => &mut c.text,
                "user_name" => &mut c.user_name,
                "channel_id" => &mut c.channel_id,
                "response_url" => &mut c.response_url,
                _ => continue,
            };
            *slot = v.into_owned();
        }
        c
    }

    /// The question asked: the text, clipped, or a default when it is empty.
    pub fn question(&self) -> String {
        let t = self.text.trim();
        if t.is_empty() {
            "What is happening right now?".into()
        } else {
            clip(t, MAX_QUESTION)
        }
    }
}

/// Slack's escaping of `&`, `<` and `>`, so text cannot form mentions or links.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The most text sent to a channel, in bytes (Slack truncates messages near 40 000).
pub const MAX_ANSWER: usize = 3500;

/// The JSON answer to a slash command, shown to the whole channel.
pub fn channel_response(question: &str, answer: &str) -> serde_json::Value {
    let text = format!("*{}*\n{}", escape(question), escape(answer));
    serde_json::json!({
        "response_type": "in_channel",
        "text": clip(&text, MAX_ANSWER),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Slack's documented example request.
    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const TS: &str = "1531420618";
    const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    #[test]
    fn slacks_documented_example_verifies() {
        let s = Secret::new(SECRET);
        assert_eq!(sign(&s, TS, BODY.as_bytes()), SIG);
        assert_eq!(
            verify(&s, TS, SIG, BODY.as_bytes(), 1_531_420_618 + 10),
            Ok(())
        );
    }

    #[test]
    fn refusals() {
        let s = Secret::new(SECRET);
        let now = 1_531_420_618;
        let wrong = Secret::new("another-secret");
        assert_eq!(
            verify(&wrong, TS, SIG, BODY.as_bytes(), now),
            Err(SlackError::BadSignature)
        );
        let altered = BODY.replace("text=", "text=delete");
        assert_eq!(
            verify(&s, TS, SIG, altered.as_bytes(), now),
            Err(SlackError::BadSignature)
        );
        assert_eq!(
            verify(&s, TS, SIG, BODY.as_bytes(), now + 301),
            Err(SlackError::Stale { age_secs: 301 })
        );
        assert_eq!(
            verify(&s, TS, SIG, BODY.as_bytes(), now - 400),
            Err(SlackError::Stale { age_secs: -400 })
        );
        assert_eq!(
            verify(&s, "x", SIG, BODY.as_bytes(), now),
            Err(SlackError::BadTimestamp)
        );
        assert_eq!(
            verify(&s, TS, "v1=00", BODY.as_bytes(), now),
            Err(SlackError::BadSignature)
        );
        assert_eq!(
            verify(&s, TS, "v0=zz", BODY.as_bytes(), now),
            Err(SlackError::BadSignature)
        );
    }

    #[test]
    fn slash_command_to_question_and_answer() {
        let c = SlashCommand::parse(
            "command=%2Fportent&text=what%27s+happening+in+production%3F&user_name=ana&channel_id=C1&response_url=https%3A%2F%2Fhooks.example%2Fx",
        );
        assert_eq!(c.command, "/portent");
        assert_eq!(c.question(), "what's happening in production?");
        assert_eq!(
            SlashCommand::parse(BODY).question(),
            "What is happening right now?"
        );
        let r = channel_response("q <@U1>", "a & b");
        assert_eq!(r["response_type"], "in_channel");
        assert_eq!(r["text"], "*q &lt;@U1&gt;*\na &amp; b");
    }
}
