//! The incidents API without a socket: listing, one incident, its evidence, feedback with and
//! without the token, bad bodies, persistence, the feedback's effect on the next anomalies, and
//! the OpenAPI document naming every route.
#![allow(clippy::unwrap_used)]

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use portent_config::Secret;
use portent_core::{Labels, Score, Scored, Timestamp};
use portent_incidents::feedback::{FeedbackStore, ThresholdRule};
use portent_incidents::{Anomaly, CorrelatorConfig, PackConfig};
use portent_server::incidents::{Candidate, OPENAPI};
use portent_server::{Control, Hub, Reloader, ScoreKey, Scores, SelfMetrics, api_router};
use prometheus_client::registry::Registry;
use serde_json::Value;
use tower::ServiceExt;

const TOKEN: &str = "s3cret";

fn app(dir: &std::path::Path, token: Option<&str>) -> (Hub, Router) {
    let store = FeedbackStore::open(dir.join("feedback.json"), ThresholdRule::default()).unwrap();
    let config = CorrelatorConfig {
        hold: std::time::Duration::ZERO,
        ..CorrelatorConfig::default()
    };
    let hub = Hub::new(config, store, PackConfig::default());
    let metrics = SelfMetrics::new(&mut Registry::default());
    let control = Control::new(
        token.map(|t| Secret::new(t.to_owned())),
        Reloader::new(metrics, || async { Ok(()) }),
    );
    let scores = Scores::new();
    let key = ScoreKey::new("latency".into(), "m".into(), pod());
    let mut high = Scored::unknown(at(0), 500.0);
    high.score = Score::new(0.97).unwrap();
    scores.set(key, high);
    let router = api_router(hub.clone(), control, scores);
    (hub, router)
}

async fn send(
    app: &Router,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.map_or(Body::empty(), |b| Body::from(b.to_owned())))
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 24)
        .await
        .unwrap();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, json)
}

fn at(min: i64) -> Timestamp {
    Timestamp::from_secs(1_800_000_000 + 60 * min)
}

fn pod() -> Labels {
    Labels::new([
        ("__name__", "latency"),
        ("namespace", "shop"),
        ("pod", "api-7d9f8-xk2p"),
    ])
    .unwrap()
}

/// A jump of `value` on the pod's series at minute `min`.
fn jump(min: i64, value: f64) -> Candidate {
    Candidate {
        anomaly: Anomaly {
            labels: pod(),
            query: "latency".into(),
            model: "m".into(),
            scored: Scored {
                t: at(min),
                value,
                score: Score::ONE,
                yhat: 100.0,
                yhat_lower: 90.0,
                yhat_upper: 110.0,
                reason: None,
            },
        },
        threshold: Score::ALERT,
    }
}

#[tokio::test]
async fn incidents_are_listed_shown_and_explained() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, app) = app(dir.path(), Some(TOKEN));
    let (s, v) = send(&app, "GET", "/api/v1/incidents", None, None).await;
    assert_eq!(
        (s, v["incidents"].as_array().unwrap().len()),
        (StatusCode::OK, 0)
    );

    for min in 0..3 {
        hub.observe([jump(min, 500.0)], at(min));
    }
    let (s, v) = send(&app, "GET", "/api/v1/incidents?state=firing", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let list = v["incidents"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{v}");
    let id = list[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(list[0]["state"], "firing");
    assert_eq!(list[0]["top_cause"]["evidence_id"], "e1");
    assert!(
        list[0]["top_cause"]["series"]
            .as_str()
            .unwrap()
            .contains("api-7d9f8-xk2p")
    );

    let (s, v) = send(&app, "GET", &format!("/api/v1/incidents/{id}"), None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["incident"]["incident"]["id"], id.as_str());
    assert!(
        v["explanation"].as_str().unwrap().contains("latency"),
        "{v}"
    );
    let (s, v) = send(
        &app,
        "GET",
        &format!("/api/v1/incidents/{id}/evidence"),
        None,
        None,
    )
    .await;
    assert_eq!(
        (s, &v["series"][0]["id"]),
        (StatusCode::OK, &Value::from("e1"))
    );

    // Asked, it says what is open and what scores high.
    let (s, v) = send(
        &app,
        "GET",
        "/api/v1/ask?q=what%27s+happening+in+shop%3F",
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let answer = v["answer"].as_str().unwrap();
    assert!(answer.contains(&id), "{answer}");
    assert!(answer.contains("0.97"), "{answer}");
    let (s, _) = send(&app, "GET", "/api/v1/ask", None, None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    let (s, v) = send(&app, "GET", "/api/v1/incidents/nope", None, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("no incident \"nope\"")
    );
    let (s, v) = send(&app, "GET", "/api/v1/incidents?state=burning", None, None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("pending, firing, resolved or open")
    );
}

#[tokio::test]
async fn feedback_needs_the_token_persists_and_keeps_the_pattern_from_paging_again() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, app) = app(dir.path(), Some(TOKEN));
    for min in 0..3 {
        hub.observe([jump(min, 500.0)], at(min));
    }
    let id = hub.packs()[0].incident.id.clone();
    let path = format!("/api/v1/incidents/{id}/feedback");
    let body = r#"{"verdict": "false_positive", "by": "alice", "note": "load test"}"#;

    let (s, _) = send(&app, "POST", &path, Some(body), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = send(&app, "POST", &path, Some(body), Some("wrong")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, v) = send(
        &app,
        "POST",
        &path,
        Some(r#"{"verdict": "meh"}"#),
        Some(TOKEN),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("unknown variant `meh`"),
        "{v}"
    );
    let (s, _) = send(
        &app,
        "POST",
        "/api/v1/incidents/nope/feedback",
        Some(body),
        Some(TOKEN),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(hub.feedback().is_empty(), "refused requests change nothing");

    let (s, v) = send(&app, "POST", &path, Some(body), Some(TOKEN)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        (v["id"].as_str(), v["by"].as_str()),
        (Some("fb-1"), Some("alice"))
    );
    let (_, v) = send(&app, "GET", &format!("/api/v1/incidents/{id}"), None, None).await;
    assert_eq!(v["feedback"][0]["verdict"], "false_positive");
    // Kept across a restart.
    let again =
        FeedbackStore::open(dir.path().join("feedback.json"), ThresholdRule::default()).unwrap();
    assert_eq!(again.entries().len(), 1);
    assert_eq!(hub.exclusions().len(), 1);

    // The incident resolves; the same jump later is held back, a larger one pages.
    hub.observe([], at(30));
    let seen = hub.observe([jump(40, 500.0)], at(40));
    assert_eq!((seen.anomalies, seen.held_back_by_feedback), (0, 1));
    let open = |h: &Hub| {
        h.packs()
            .iter()
            .filter(|p| p.incident.resolved_at.is_none())
            .count()
    };
    assert_eq!(open(&hub), 0);
    let seen = hub.observe([jump(41, 5_000.0)], at(41));
    assert_eq!(seen.anomalies, 1);
    assert_eq!(open(&hub), 1);

    // A verdict on one anomaly, by labels and window.
    let anomaly = format!(
        r#"{{"verdict": "confirmed", "labels": {{"pod": "x"}}, "query": "q", "model": "m", "from": {}, "to": {}}}"#,
        at(1).millis(),
        at(2).millis()
    );
    let (s, v) = send(
        &app,
        "POST",
        "/api/v1/feedback",
        Some(&anomaly),
        Some(TOKEN),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = send(&app, "GET", "/api/v1/feedback", None, None).await;
    assert_eq!(
        (s, v["feedback"].as_array().unwrap().len()),
        (StatusCode::OK, 2)
    );
}

#[tokio::test]
async fn without_a_configured_token_feedback_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_, app) = app(dir.path(), None);
    let (s, v) = send(
        &app,
        "POST",
        "/api/v1/incidents/x/feedback",
        Some("{}"),
        Some("any"),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(v.as_str().unwrap().contains("set server.bearer_token"));
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let (_, app) = app(dir.path(), None);
    let (s, doc) = send(&app, "GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(doc, serde_json::from_str::<Value>(OPENAPI).unwrap());
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    // Every API route (the incidents API's and the UI's JSON), with its methods, and nothing
    // else; the UI's pages and assets are not API.
    let src = [
        include_str!("../src/incidents.rs"),
        include_str!("../src/ui.rs"),
    ];
    let mut routes = 0;
    for line in src
        .iter()
        .flat_map(|s| s.lines())
        .filter(|l| l.trim_start().starts_with(".route(\"/api/"))
    {
        let path = line.split('"').nth(1).unwrap();
        let entry = paths
            .get(path)
            .unwrap_or_else(|| panic!("{path} is not in the OpenAPI document"));
        for method in ["get", "post"] {
            if line.contains(&format!("{method}(")) {
                assert!(
                    entry.get(method).is_some(),
                    "{method} {path} is not documented"
                );
            }
        }
        routes += 1;
    }
    assert_eq!(routes, paths.len());
}
