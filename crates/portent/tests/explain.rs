//! Explanations end to end: `portent serve` in push mode with `explain.llm` pointing at a fake
//! Anthropic Messages API in this test, which checks the request (path, key, version header,
//! model, an evidence pack in the prompt) and answers a valid JSON answer citing an evidence
//! ID it found in that pack. A spike pushed by remote_write opens an incident; the model's
//! text must be in `GET /api/v1/incidents/{id}` and in the annotations of the alert a real
//! Alertmanager delivers to a webhook receiver here, already on the first firing
//! notification (the notifier waits for the explanation). `GET /api/v1/ask` answers through
//! the model too. The key never shows in portent's output. 127.0.0.1 only; every wait has a
//! deadline.
//!
//! Skipped (with a loud message) when `prometheus-alertmanager` is not installed, unless
//! `PORTENT_REQUIRE_SERVERS` is set.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use std::io::Write;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{
    alerts, finite_yhat, free_port, get, now_ms, push_gauge, read_request, require,
    start_alertmanager, start_portent, until, webhook,
};
use portent_core::{Sample, Timestamp};

const KEY: &str = "sk-ant-test-key-never-logged";
const MODEL: &str = "fake-claude";

/// What the fake model saw: each request's headers (lowercased) and body.
type Seen = Arc<Mutex<Vec<(String, serde_json::Value)>>>;

/// The evidence ID the answer cites: in a question's prompt, the first incident's ID (IDs
/// there are qualified by incident); in an incident's, its first series `e…`.
fn cite(prompt: &str) -> Option<String> {
    if prompt.starts_with("Question (from an engineer") {
        let at = prompt.find(r#""id":"inc-"#)? + r#""id":""#.len();
        let id: String = prompt[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        return Some(id);
    }
    // `e` and digits, then the closing quote: not an incident ID that happens to start with e.
    prompt.match_indices(r#""id":"e"#).find_map(|(at, m)| {
        let rest = &prompt[at + m.len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        (!digits.is_empty() && rest[digits.len()..].starts_with('"')).then(|| format!("e{digits}"))
    })
}

/// A fake Anthropic Messages API on 127.0.0.1: `POST /v1/messages` answered with a valid
/// answer citing [`cite`]; anything else is a 400 the test will see as a fallback.
fn fake_anthropic() -> (u16, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let Some((head, body)) = read_request(&mut stream) else {
                continue;
            };
            let request: serde_json::Value =
                serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
            log.lock().unwrap().push((head.clone(), request.clone()));
            let prompt = request["messages"][0]["content"].as_str().unwrap_or("");
            let valid = head.starts_with("post /v1/messages ")
                && head.contains(&format!("x-api-key: {}", KEY.to_ascii_lowercase()))
                && head.contains("anthropic-version: 2023-06-01")
                && request["model"] == MODEL
                && request["system"].is_string();
            let reply = match (valid, cite(prompt)) {
                (true, Some(id)) => {
                    let answer = serde_json::json!({
                        "summary": "LLM-SUMMARY: test_gauge jumped a hundredfold at once",
                        "likely_cause": "LLM-CAUSE: the demo workload's gauge was set to 10000",
                        "evidence_ids": [id],
                        "actions": ["LLM-ACTION: check what set the gauge"],
                    });
                    let body = serde_json::json!({
                        "id": "msg_1",
                        "type": "message",
                        "role": "assistant",
                        "model": MODEL,
                        "content": [{"type": "text", "text": answer.to_string()}],
                        "stop_reason": "end_turn",
                        "usage": {"input_tokens": 1200, "output_tokens": 80},
                    });
                    ("200 OK", body.to_string())
                }
                _ => (
                    "400 Bad Request",
                    r#"{"type":"error","error":{"type":"invalid_request_error","message":"unexpected request"}}"#
                        .to_owned(),
                ),
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{}",
                reply.0,
                reply.1.len(),
                reply.1
            );
        }
    });
    (port, seen)
}

/// Around 100, with seeded noise in [-5, 5).
fn noisy(i: u64) -> f64 {
    let mut x = 0x2545_f491_4f6c_dd1d ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    100.0 + (x >> 11) as f64 / (1u64 << 53) as f64 * 10.0 - 5.0
}

#[test]
fn the_models_explanation_reaches_the_api_and_alertmanagers_annotations() {
    let Some(alertmanager) = require("prometheus-alertmanager") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (llm_port, seen) = fake_anthropic();
    let (hook, got) = webhook();
    let am_port = free_port();
    let _am = start_alertmanager(&alertmanager, am_port, hook, &dir.path().join("am"));

    std::fs::write(dir.path().join("llm.key"), format!("{KEY}\n")).unwrap();
    std::fs::write(
        dir.path().join("runbooks.yml"),
        "entries:
  - name: demo-gauge
    match: { labels: { __name__: test_gauge } }
    steps: [\"RUNBOOK-STEP: compare with the deploy log\"]
",
    )
    .unwrap();
    let port = free_port();
    let config = dir.path().join("portent.yml");
    std::fs::write(
        &config,
        format!(
            "source:
  push:
queries:
  gauge:
    expr: 'test_gauge{{kind=\"demo\"}}'
    step: 1s
schedules:
  fast:
    fit_every: 10s
    fit_window: 10m
    score_every: 1s
models:
  m:
    type: auto
    queries: [gauge]
    schedules: [fast]
server:
  listen: 127.0.0.1:{port}
storage:
  dir: state
incidents:
  hold: 0s
  gap: 5s
  resolve_after: 30s
  notify:
    alertmanager:
      - url: http://127.0.0.1:{am_port}
        resend_every: 2s
explain:
  runbooks: runbooks.yml
  llm:
    provider: anthropic
    url: http://127.0.0.1:{llm_port}
    model: {MODEL}
    api_key_file: llm.key
    timeout: 10s
"
        ),
    )
    .unwrap();
    let portent = start_portent(&config, &dir.path().join("portent.log"));
    let logs = || {
        format!(
            "--- portent ---\n{}\n--- model requests ---\n{}\n--- webhook ---\n{:?}",
            portent.log(),
            seen.lock().unwrap().len(),
            got.lock().unwrap()
        )
    };

    // Ten minutes of calm history at once, up to now, then a sample a second from a pusher
    // thread: no gap for the detector to flag as missing data.
    until(Duration::from_secs(20), "portent listening", &logs, || {
        let end = now_ms();
        let history = (0..600)
            .map(|i| Sample {
                t: Timestamp::from_millis(end - (600 - i) * 1000),
                v: noisy(i as u64),
            })
            .collect();
        push_gauge(port, "test_gauge", history).filter(|s| *s == 204 || *s == 200)
    });
    let level = Arc::new(AtomicU64::new(0));
    let jumping = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let pusher = {
        let (level, jumping, stop) = (Arc::clone(&level), Arc::clone(&jumping), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut i = 1000u64;
            while !stop.load(Ordering::SeqCst) {
                let v = if jumping.load(Ordering::SeqCst) {
                    f64::from_bits(level.load(Ordering::SeqCst))
                } else {
                    noisy(i)
                };
                let _ = push_gauge(
                    port,
                    "test_gauge",
                    vec![Sample {
                        t: Timestamp::from_millis(now_ms()),
                        v,
                    }],
                );
                i += 1;
                std::thread::sleep(Duration::from_millis(1000));
            }
        })
    };
    until(
        Duration::from_secs(30),
        "a finite portent_yhat",
        &logs,
        || finite_yhat(port, "gauge"),
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        alerts(&got, "firing").is_empty(),
        "paged before the spike\n{}",
        logs()
    );

    level.store(10_000f64.to_bits(), Ordering::SeqCst);
    jumping.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(3500));
    jumping.store(false, Ordering::SeqCst);

    // The first firing alert Alertmanager delivers already carries the model's explanation.
    let firing = until(
        Duration::from_secs(40),
        "the incident's alert at the webhook",
        &logs,
        || alerts(&got, "firing").into_iter().next(),
    );
    let a = &firing["annotations"];
    let text = |k: &str| a[k].as_str().unwrap_or_default().to_owned();
    assert_eq!(text("explanation_source"), "llm", "{firing}\n{}", logs());
    assert!(text("summary").starts_with("LLM-SUMMARY"), "{firing}");
    assert!(text("likely_cause").starts_with("LLM-CAUSE"), "{firing}");
    assert!(text("description").contains("LLM-ACTION"), "{firing}");
    assert!(text("runbook").contains("RUNBOOK-STEP"), "{firing}");
    let id = firing["labels"]["incident"].as_str().unwrap().to_owned();

    // The API shows the same explanation, its parts and its source.
    let (status, body) = get(port, &format!("/api/v1/incidents/{id}")).unwrap();
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let d = &v["explanation_detail"];
    assert_eq!(d["source"], "llm", "{d}");
    assert_eq!(d["model"], MODEL, "{d}");
    assert!(
        d["summary"].as_str().unwrap().starts_with("LLM-SUMMARY"),
        "{d}"
    );
    assert!(
        d["likely_cause"].as_str().unwrap().starts_with("LLM-CAUSE"),
        "{d}"
    );
    assert_eq!(d["evidence_ids"], serde_json::json!(["e1"]), "{d}");
    assert_eq!(
        d["actions"][0], "LLM-ACTION: check what set the gauge",
        "{d}"
    );
    assert_eq!(d["runbooks"][0]["entry"], "demo-gauge", "{d}");
    assert_eq!(d["usage"]["input_tokens"], 1200, "{d}");
    assert!(
        v["explanation"].as_str().unwrap().contains("LLM-SUMMARY"),
        "{v}"
    );

    // What the model was sent: the pack with its series, and the runbook entry.
    let first = seen.lock().unwrap()[0].1.clone();
    let prompt = first["messages"][0]["content"].as_str().unwrap();
    assert!(
        prompt.contains("test_gauge") && prompt.contains("demo-gauge"),
        "{prompt}"
    );

    // A question goes through the model as well.
    let (status, body) = get(port, "/api/v1/ask?q=what%27s+happening%3F").unwrap();
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["source"], "llm", "{v}");
    assert!(v["answer"].as_str().unwrap().contains("LLM-SUMMARY"), "{v}");

    stop.store(true, Ordering::SeqCst);
    pusher.join().unwrap();
    drop(portent);
    let log = std::fs::read_to_string(dir.path().join("portent.log")).unwrap();
    assert!(!log.contains(KEY), "the key is in portent's output:\n{log}");
}
