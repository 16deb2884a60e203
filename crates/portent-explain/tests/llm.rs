//! Both provider wire formats against local servers that check what portent sends: headers,
//! body shape, retries, validation with one retry, fallback, cache, budget, pseudonymisation
//! and key hygiene.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{
    Fake, LogCapture, NODE, NS, POD, REAL_NAMES, anthropic_reply, openai_reply, pack, serve,
};
use portent_explain::{
    Catalogue, Explainer, ExplainerConfig, LlmClient, LlmConfig, Outcome, ProviderKind,
    Pseudonymiser, Secret,
};

const KEY: &str = "sk-test-0123456789abcdef-SECRET";

fn config(kind: ProviderKind, fake: &Fake) -> LlmConfig {
    let mut c = LlmConfig::new(kind, fake.url.clone(), "test-model");
    c.api_key = Some(Secret::new(KEY));
    c.backoff = Duration::from_millis(5);
    c.max_backoff = Duration::from_millis(20);
    c.timeout = Duration::from_secs(5);
    c
}

fn explainer(c: LlmConfig, pseudonymise: bool) -> Explainer {
    let client = LlmClient::new(c).unwrap_or_else(|e| panic!("client: {e}"));
    Explainer::new(
        Some(client),
        Catalogue::default(),
        ExplainerConfig {
            pseudonymise,
            ..ExplainerConfig::default()
        },
    )
}

/// A valid answer in the model's (pseudonymised) terms.
fn good_answer(pod: &str, node: &str) -> String {
    serde_json::json!({
        "summary": format!("Memory of {pod} climbed after {node} saturated its CPU."),
        "likely_cause": format!("CPU saturation on {node}."),
        "evidence_ids": ["e1", "e2"],
        "actions": [format!("Cordon {node} and move {pod} elsewhere.")]
    })
    .to_string()
}

fn aliases() -> (String, String) {
    let p = Pseudonymiser::for_pack(&pack());
    (
        p.alias(POD).unwrap_or_default().to_owned(),
        p.alias(NODE).unwrap_or_default().to_owned(),
    )
}

fn keys(v: &serde_json::Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn anthropic_wire_format_and_restored_answer() {
    let (pod, node) = aliases();
    assert_eq!((pod.as_str(), node.as_str()), ("pod1", "node1"));
    let reply = good_answer(&pod, &node);
    let fake = serve(move |_, _| (200, anthropic_reply(&reply))).await;
    let ex = explainer(config(ProviderKind::Anthropic, &fake), true);
    let p = pack();
    let e = ex.explain(&p).await;

    let reqs = fake.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/v1/messages")
    );
    assert_eq!(r.headers.get("x-api-key").map(String::as_str), Some(KEY));
    assert_eq!(
        r.headers.get("anthropic-version").map(String::as_str),
        Some("2023-06-01")
    );
    assert_eq!(
        r.headers.get("content-type").map(String::as_str),
        Some("application/json")
    );
    assert!(!r.headers.contains_key("authorization"));
    let body = r.json();
    assert_eq!(
        keys(&body),
        ["max_tokens", "messages", "model", "system", "temperature"]
            .map(String::from)
            .into()
    );
    assert_eq!(body["model"], "test-model");
    assert_eq!(body["max_tokens"], 1024);
    assert!(
        body["system"]
            .as_str()
            .is_some_and(|s| s.contains("\"evidence_ids\""))
    );
    let msgs = body["messages"].as_array().cloned().unwrap_or_default();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0]["role"], "user");
    let content = msgs[0]["content"].as_str().unwrap_or_default();
    assert!(
        content.contains("\"id\":\"e1\""),
        "the pack is in the prompt"
    );

    assert_eq!(
        e.outcome,
        Outcome::Model {
            model: "test-model".into(),
            attempts: 1
        }
    );
    let a = e.answer.clone().unwrap_or_else(|| panic!("answer"));
    assert_eq!(
        a.summary,
        format!("Memory of {POD} climbed after {NODE} saturated its CPU.")
    );
    assert_eq!(
        a.actions,
        vec![format!("Cordon {NODE} and move {POD} elsewhere.")]
    );
    assert_eq!(a.evidence_ids, vec!["e1", "e2"]);
    assert!(e.text.starts_with(&a.summary));
    assert!(e.text.contains("portent runs none of them"));
    assert_eq!((e.usage.input_tokens, e.usage.output_tokens), (2095, 503));
    assert_eq!(ex.spent(&p.incident.id).input_tokens, 2095);
}

#[tokio::test]
async fn openai_wire_format() {
    let reply = good_answer("pod1", "node1");
    let fake = serve(move |_, _| (200, openai_reply(&reply))).await;
    let ex = explainer(config(ProviderKind::OpenAi, &fake), true);
    let e = ex.explain(&pack()).await;

    let reqs = fake.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/v1/chat/completions")
    );
    assert_eq!(
        r.headers.get("authorization"),
        Some(&format!("Bearer {KEY}"))
    );
    assert!(!r.headers.contains_key("x-api-key"));
    let body = r.json();
    assert_eq!(
        keys(&body),
        [
            "max_tokens",
            "messages",
            "model",
            "response_format",
            "temperature"
        ]
        .map(String::from)
        .into()
    );
    assert_eq!(
        body["response_format"],
        serde_json::json!({"type": "json_object"})
    );
    let msgs = body["messages"].as_array().cloned().unwrap_or_default();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0]["role"], "system");
    assert_eq!(msgs[1]["role"], "user");
    for m in &msgs {
        assert_eq!(keys(m), ["content", "role"].map(String::from).into());
    }
    assert!(matches!(e.outcome, Outcome::Model { attempts: 1, .. }));
    assert_eq!((e.usage.input_tokens, e.usage.output_tokens), (1117, 46));
}

#[tokio::test]
async fn openai_without_key_or_json_mode() {
    let reply = good_answer("pod1", "node1");
    let fake = serve(move |_, _| (200, openai_reply(&reply))).await;
    let mut c = config(ProviderKind::OpenAi, &fake);
    c.api_key = None;
    c.json_mode = false;
    c.base_url = format!("{}/v1/", fake.url);
    let e = explainer(c, true).explain(&pack()).await;
    let r = &fake.requests()[0];
    assert_eq!(r.path, "/v1/chat/completions");
    assert!(!r.headers.contains_key("authorization"));
    assert!(r.json().get("response_format").is_none());
    assert!(matches!(e.outcome, Outcome::Model { .. }));
}

#[tokio::test]
async fn malformed_answer_retries_once_with_the_error_then_falls_back() {
    for kind in [ProviderKind::Anthropic, ProviderKind::OpenAi] {
        let reply = move |t: &str| match kind {
            ProviderKind::Anthropic => anthropic_reply(t),
            ProviderKind::OpenAi => openai_reply(t),
        };
        let fake = serve(move |_, n| match n {
            0 => (200, reply("Sure! The pod is unhappy.")),
            _ => (
                200,
                reply(r#"{"summary":"s","likely_cause":"c","evidence_ids":["e99"],"actions":[]}"#),
            ),
        })
        .await;
        let ex = explainer(config(kind, &fake), false);
        let p = pack();
        let e = ex.explain(&p).await;
        let reqs = fake.requests();
        assert_eq!(reqs.len(), 2, "{kind:?}: one retry, no more");
        let msgs = reqs[1].json()["messages"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let convo: Vec<&serde_json::Value> =
            msgs.iter().filter(|m| m["role"] != "system").collect();
        assert_eq!(convo.len(), 3, "{kind:?}");
        assert_eq!(convo[1]["role"], "assistant");
        assert_eq!(convo[1]["content"], "Sure! The pod is unhappy.");
        assert!(
            convo[2]["content"]
                .as_str()
                .is_some_and(|c| c.contains("rejected: answer: no JSON object in the answer")),
            "{kind:?}: the retry quotes the validation error"
        );
        match &e.outcome {
            Outcome::Fallback { reason } => {
                assert!(
                    reason.starts_with("answer: unknown evidence IDs e99"),
                    "{reason}"
                )
            }
            o => panic!("{kind:?}: {o:?}"),
        }
        assert!(e.answer.is_none());
        assert!(
            e.text.starts_with(&p.explain()),
            "deterministic text on fallback"
        );
    }
}

#[tokio::test]
async fn a_second_answer_that_validates_is_used() {
    let fake = serve(|_, n| match n {
        0 => (200, anthropic_reply(r#"{"summary":"s"}"#)),
        _ => (200, anthropic_reply(&good_answer("pod1", "node1"))),
    })
    .await;
    let e = explainer(config(ProviderKind::Anthropic, &fake), true)
        .explain(&pack())
        .await;
    assert!(
        matches!(e.outcome, Outcome::Model { attempts: 2, .. }),
        "{:?}",
        e.outcome
    );
    assert_eq!(e.usage.input_tokens, 2 * 2095);
}

#[tokio::test]
async fn retries_429_and_5xx_but_not_401() {
    let fake = serve(|_, n| match n {
        0 => (
            429,
            r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#.into(),
        ),
        1 => (
            529,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"busy"}}"#.into(),
        ),
        _ => (200, anthropic_reply(&good_answer("pod1", "node1"))),
    })
    .await;
    let e = explainer(config(ProviderKind::Anthropic, &fake), true)
        .explain(&pack())
        .await;
    assert_eq!(fake.requests().len(), 3);
    assert!(matches!(e.outcome, Outcome::Model { attempts: 1, .. }));

    let fake = serve(|_, _| (401, r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#.into())).await;
    let e = explainer(config(ProviderKind::Anthropic, &fake), true)
        .explain(&pack())
        .await;
    assert_eq!(fake.requests().len(), 1);
    assert_eq!(
        e.outcome,
        Outcome::Fallback {
            reason: "llm: status 401".into()
        }
    );

    let fake = serve(|_, _| (503, "{}".into())).await;
    let mut c = config(ProviderKind::OpenAi, &fake);
    c.max_retries = 1;
    let e = explainer(c, true).explain(&pack()).await;
    assert_eq!(fake.requests().len(), 2);
    assert!(matches!(e.outcome, Outcome::Fallback { .. }));
}

#[tokio::test]
async fn unreachable_endpoint_times_out_into_fallback() {
    let silent = common::silent().await;
    let mut c = LlmConfig::new(ProviderKind::OpenAi, silent.clone(), "m");
    c.timeout = Duration::from_millis(200);
    c.max_retries = 1;
    c.backoff = Duration::from_millis(5);
    let e = explainer(c, true).explain(&pack()).await;
    match e.outcome {
        Outcome::Fallback { reason } => assert!(reason.starts_with("llm: "), "{reason}"),
        o => panic!("{o:?}"),
    }
}

#[tokio::test]
async fn cache_by_fingerprint() {
    let fake = serve(|_, _| (200, anthropic_reply(&good_answer("pod1", "node1")))).await;
    let ex = explainer(config(ProviderKind::Anthropic, &fake), true);
    let p = pack();
    let first = ex.explain(&p).await;
    let second = ex.explain(&p).await;
    assert_eq!(fake.requests().len(), 1);
    assert!(!first.cached && second.cached);
    assert_eq!(first.fingerprint, second.fingerprint);
    assert_eq!(first.text, second.text);
    assert_eq!(second.usage.input_tokens, 0);
    // Different content, different fingerprint: asked again.
    let mut changed = p.clone();
    changed.incident.series_total += 1;
    let third = ex.explain(&changed).await;
    assert_ne!(third.fingerprint, first.fingerprint);
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn token_and_cost_caps_stop_spending() {
    let fake = serve(|_, _| (200, anthropic_reply(&good_answer("pod1", "node1")))).await;
    let mut c = config(ProviderKind::Anthropic, &fake);
    c.budget.max_tokens = 500;
    let e = explainer(c, true).explain(&pack()).await;
    assert!(fake.requests().is_empty());
    match e.outcome {
        Outcome::Fallback { reason } => {
            assert!(reason.starts_with("budget: incident inc-"), "{reason}")
        }
        o => panic!("{o:?}"),
    }

    // Prices set: the first call fits, a re-explanation of the grown incident does not.
    let fake = serve(|_, _| (200, anthropic_reply(&good_answer("pod1", "node1")))).await;
    let mut c = config(ProviderKind::Anthropic, &fake);
    c.budget.input_price_per_mtok = 3.0;
    c.budget.output_price_per_mtok = 15.0;
    c.budget.max_cost = 0.03;
    let ex = explainer(c, true);
    let p = pack();
    assert!(matches!(
        ex.explain(&p).await.outcome,
        Outcome::Model { .. }
    ));
    let spent = ex.spent(&p.incident.id);
    assert!((spent.cost - (2095.0 * 3.0 + 503.0 * 15.0) / 1e6).abs() < 1e-12);
    let mut grown = p.clone();
    grown.incident.series_total += 1;
    match ex.explain(&grown).await.outcome {
        Outcome::Fallback { reason } => assert!(
            reason.contains("would exceed the cap of $0.0300"),
            "{reason}"
        ),
        o => panic!("{o:?}"),
    }
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn pseudonymisation_hides_every_real_name_and_restores_them() {
    let mut p = pack();
    portent_explain::attach(
        &mut p,
        &[portent_explain::KubeEvent {
            id: "k1".into(),
            namespace: NS.into(),
            object: format!("Pod/{POD}"),
            type_: "Warning".into(),
            reason: "BackOff".into(),
            message: format!("Back-off restarting failed container on {NODE} (10.1.2.3)"),
            count: 4,
            last_seen: None,
        }],
        &[portent_explain::LogLine {
            id: "l1".into(),
            at: "2027-01-15T08:01:00Z".into(),
            namespace: Some(NS.into()),
            pod: Some(POD.into()),
            line: "dial tcp 10.1.2.3:5432: connect: connection refused (db-primary.corp.example)"
                .into(),
        }],
    );
    for kind in [ProviderKind::Anthropic, ProviderKind::OpenAi] {
        let reply = move |t: &str| match kind {
            ProviderKind::Anthropic => anthropic_reply(t),
            ProviderKind::OpenAi => openai_reply(t),
        };
        // The first answer is rejected so the retry (which quotes it) is checked too.
        let fake = serve(move |_, n| match n {
            0 => (200, reply("{}")),
            _ => (200, reply(&good_answer("pod1", "node1"))),
        })
        .await;
        let e = explainer(config(kind, &fake), true).explain(&p).await;
        let reqs = fake.requests();
        assert_eq!(reqs.len(), 2);
        for r in &reqs {
            for name in REAL_NAMES {
                assert!(!r.body.contains(name), "{kind:?}: {name} was sent");
            }
            assert!(r.body.contains("pod1") && r.body.contains("192.0.2.1"));
        }
        let a = e.answer.unwrap_or_else(|| panic!("answer"));
        assert!(
            a.summary.contains(POD) && a.summary.contains(NODE),
            "{}",
            a.summary
        );

        // And with pseudonymisation off the names are there: the check above can see them.
        let fake = serve(move |_, _| (200, reply(&good_answer("x", "y")))).await;
        explainer(config(kind, &fake), false).explain(&p).await;
        let body = &fake.requests()[0].body;
        for name in REAL_NAMES {
            assert!(body.contains(name), "{name}");
        }
    }
}

#[tokio::test]
async fn the_key_never_appears_in_logs_debug_errors_or_results() {
    let capture = LogCapture::default();
    let _guard = tracing::subscriber::set_default(capture.clone());
    let fake = serve(|_, n| match n {
        0 => (500, "{}".into()),
        1 => (200, openai_reply("not json")),
        _ => (401, "{}".into()),
    })
    .await;
    let c = config(ProviderKind::OpenAi, &fake);
    assert!(!format!("{c:?}").contains(KEY));
    let ex = explainer(c, true);
    assert!(!format!("{ex:?}").contains(KEY));
    let e = ex.explain(&pack()).await;
    assert!(matches!(e.outcome, Outcome::Fallback { .. }));
    let logs = capture.text();
    assert!(logs.contains("llm:"), "logging happened: {logs}");
    assert!(!logs.contains(KEY), "{logs}");
    assert!(!format!("{e:?}").contains(KEY));
    assert!(!serde_json::to_string(&e).unwrap_or_default().contains(KEY));
    assert!(fake.requests().iter().all(|r| !r.body.contains(KEY)));
}
