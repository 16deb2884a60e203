//! `POST /api/v1/slack/command` without a socket: a request signed with the configured secret
//! and a fresh timestamp is answered in the channel; a wrong secret, an altered body, a stale
//! timestamp or a missing signature is refused; without a secret the endpoint is off. And
//! `GET /api/v1/incidents/{id}` carries the explanation's parts and source.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use portent_config::Secret;
use portent_core::{Labels, Score, Scored, Timestamp};
use portent_explain::{Catalogue, Explainer, ExplainerConfig, slack};
use portent_incidents::feedback::{FeedbackStore, ThresholdRule};
use portent_incidents::{Anomaly, CorrelatorConfig, PackConfig};
use portent_server::incidents::Candidate;
use portent_server::{Control, Explanations, Hub, Reloader, Scores, SelfMetrics, api_router};
use prometheus_client::registry::Registry;
use serde_json::Value;
use tower::ServiceExt;

const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

const RUNBOOKS: &str = r#"
entries:
  - name: shop-latency
    match: { labels: { namespace: shop } }
    steps: ["Check the last deploy of api"]
"#;

fn app(dir: &std::path::Path, secret: Option<&str>) -> (Hub, Router) {
    let store = FeedbackStore::open(dir.join("feedback.json"), ThresholdRule::default()).unwrap();
    let config = CorrelatorConfig {
        hold: std::time::Duration::ZERO,
        ..CorrelatorConfig::default()
    };
    let explainer = Explainer::new(
        None,
        Catalogue::from_yaml(RUNBOOKS).unwrap(),
        ExplainerConfig::default(),
    );
    let hub = Hub::new(config, store, PackConfig::default()).with_explanations(Explanations::new(
        Arc::new(explainer),
        secret.map(Secret::new),
    ));
    let metrics = SelfMetrics::new(&mut Registry::default());
    let control = Control::new(None, Reloader::new(metrics, || async { Ok(()) }));
    let router = api_router(hub.clone(), control, Scores::new());
    (hub, router)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Posts `body` as Slack would, with `ts` and `signature` (omitted when `None`).
async fn post(app: &Router, body: &str, ts: i64, signature: Option<String>) -> (StatusCode, Value) {
    let mut req = Request::builder()
        .method("POST")
        .uri("/api/v1/slack/command")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", ts.to_string());
    if let Some(s) = signature {
        req = req.header("x-slack-signature", s);
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

fn sign(secret: &str, ts: i64, body: &str) -> String {
    slack::sign(&Secret::new(secret), &ts.to_string(), body.as_bytes())
}

fn spike(hub: &Hub) {
    let labels = Labels::new([
        ("__name__", "latency"),
        ("namespace", "shop"),
        ("pod", "api-7d9f8-xk2p"),
    ])
    .unwrap();
    for min in 0..3 {
        let t = Timestamp::from_secs(1_800_000_000 + 60 * min);
        let c = Candidate {
            anomaly: Anomaly {
                labels: labels.clone(),
                query: "latency".into(),
                model: "m".into(),
                scored: Scored {
                    t,
                    value: 500.0,
                    score: Score::ONE,
                    yhat: 100.0,
                    yhat_lower: 90.0,
                    yhat_upper: 110.0,
                    reason: None,
                },
            },
            threshold: Score::ALERT,
        };
        hub.observe([c], t);
    }
}

const BODY: &str =
    "command=%2Fportent&text=what%27s+happening+in+shop%3F&user_name=ana&channel_id=C1";

#[tokio::test]
async fn a_signed_fresh_command_is_answered_in_the_channel() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, app) = app(dir.path(), Some(SECRET));
    spike(&hub);
    let ts = now();
    let (s, v) = post(&app, BODY, ts, Some(sign(SECRET, ts, BODY))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["response_type"], "in_channel");
    let text = v["text"].as_str().unwrap();
    assert!(text.starts_with("*what's happening in shop?*"), "{text}");
    assert!(text.contains("1 open incident(s) involving shop"), "{text}");
}

#[tokio::test]
async fn wrong_secret_altered_body_stale_or_unsigned_requests_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_, app) = app(dir.path(), Some(SECRET));
    let ts = now();
    let refused = |(s, v): (StatusCode, Value)| {
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
        v["error"].as_str().unwrap().to_owned()
    };
    let e = refused(post(&app, BODY, ts, Some(sign("another-secret", ts, BODY))).await);
    assert!(e.starts_with("slack: bad signature"), "{e}");
    let altered = BODY.replace("shop", "prod");
    let e = refused(post(&app, &altered, ts, Some(sign(SECRET, ts, BODY))).await);
    assert!(e.starts_with("slack: bad signature"), "{e}");
    // Signed correctly, but six minutes ago: a replay.
    let old = ts - 6 * 60;
    let e = refused(post(&app, BODY, old, Some(sign(SECRET, old, BODY))).await);
    assert!(e.starts_with("slack: stale timestamp"), "{e}");
    let e = refused(post(&app, BODY, ts, None).await);
    assert!(e.starts_with("slack: bad signature"), "{e}");
}

#[tokio::test]
async fn without_a_signing_secret_the_endpoint_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let (_, app) = app(dir.path(), None);
    let ts = now();
    let (s, v) = post(&app, BODY, ts, Some(sign(SECRET, ts, BODY))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("explain.slack_signing_secret"),
        "{v}"
    );
}

#[tokio::test]
async fn an_incident_shows_its_explanation_source_and_runbooks() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, app) = app(dir.path(), None);
    spike(&hub);
    let id = hub.packs()[0].incident.id.clone();
    let req = Request::get(format!("/api/v1/incidents/{id}"))
        .body(Body::empty())
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 24)
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    let d = &v["explanation_detail"];
    assert_eq!(d["source"], "deterministic", "{d}");
    assert_eq!(d["for_state"], "firing", "{d}");
    assert_eq!(d["evidence_ids"][0], "e1", "{d}");
    assert!(
        d["likely_cause"].as_str().unwrap().contains("latency"),
        "{d}"
    );
    assert_eq!(d["runbooks"][0]["entry"], "shop-latency", "{d}");
    let text = v["explanation"].as_str().unwrap();
    assert!(text.contains("Check the last deploy of api"), "{text}");
}
