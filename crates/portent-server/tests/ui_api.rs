//! The web UI's routes without a socket: the series list and one series' history (found, not
//! found, bad parameters), the pages and assets with their content types, and no asset that
//! would reach outside the daemon.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use portent_core::{Labels, Reason, Score, Scored, Timestamp};
use portent_server::history::series_id;
use portent_server::{History, ScoreKey, Scores, ui_router};
use serde_json::Value;
use tower::ServiceExt;

fn labels(pod: &str) -> Labels {
    Labels::new([("__name__", "latency"), ("pod", pod)]).unwrap()
}

fn scored(t: i64, value: f64, score: f64) -> Scored {
    Scored {
        t: Timestamp::from_secs(t),
        value,
        score: Score::new(score).unwrap(),
        yhat: 100.0,
        yhat_lower: 90.0,
        yhat_upper: 110.0,
        reason: (score >= 0.8).then_some(Reason::Spike),
    }
}

/// Three series: `hot` spiked at its last point, `calm` never did, both with a history of
/// ten points; `unkept` has a latest score but no history.
fn app() -> Router {
    let scores = Scores::new();
    let history = History::default();
    let (q, m): (Arc<str>, Arc<str>) = ("latency".into(), "m".into());
    for pod in ["hot", "calm"] {
        let l = labels(pod);
        for t in 0..10 {
            let s = if pod == "hot" && t == 9 {
                scored(1_700_000_000 + t, 500.0, 0.97)
            } else {
                scored(1_700_000_000 + t, 100.0 + t as f64, 0.0)
            };
            history.record([(&q, &m, &l, &s)]);
            scores.set(ScoreKey::new(q.clone(), m.clone(), l.clone()), s);
        }
    }
    scores.set(
        ScoreKey::new(q.clone(), m.clone(), labels("unkept")),
        scored(1_700_000_009, f64::NAN, 0.3),
    );
    ui_router(scores, history)
}

async fn send(app: &Router, path: &str) -> (StatusCode, String, String) {
    let req = Request::builder().uri(path).body(Body::empty()).unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let ty = res
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 24)
        .await
        .unwrap();
    (status, ty, String::from_utf8_lossy(&bytes).into_owned())
}

async fn json(app: &Router, path: &str) -> (StatusCode, Value) {
    let (s, ty, body) = send(app, path).await;
    assert_eq!(ty, "application/json", "{path}");
    (s, serde_json::from_str(&body).unwrap())
}

#[tokio::test]
async fn the_list_ranks_series_by_score_with_sparklines() {
    let app = app();
    let (s, v) = json(&app, "/api/v1/series").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["total"], 3);
    let list = v["series"].as_array().unwrap();
    let pods: Vec<&str> = list
        .iter()
        .map(|s| s["labels"]["pod"].as_str().unwrap())
        .collect();
    assert_eq!(pods, ["hot", "unkept", "calm"]);
    let hot = &list[0];
    assert_eq!(
        hot["id"],
        series_id("latency", "m", &labels("hot")).as_str()
    );
    assert_eq!(hot["series"], r#"latency{pod="hot"}"#);
    assert_eq!(hot["query"], "latency");
    assert_eq!(hot["model"], "m");
    assert_eq!(hot["score"], 0.97);
    assert_eq!(hot["reason"], "spike");
    assert_eq!(hot["t"], 1_700_000_009_000i64);
    assert_eq!(hot["sparkline"].as_array().unwrap().len(), 10);
    assert_eq!(hot["sparkline"][9], 500.0);
    // NaN is null in JSON; a series with no history has an empty sparkline.
    assert_eq!(list[1]["value"], Value::Null);
    assert_eq!(list[1]["sparkline"], serde_json::json!([]));

    let (s, v) = json(&app, "/api/v1/series?limit=1").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["series"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_bad_limit_says_what_to_use() {
    let app = app();
    for bad in ["0", "1001", "-1", "ten"] {
        let (s, v) = json(&app, &format!("/api/v1/series?limit={bad}")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
        assert!(
            v["error"].as_str().unwrap().contains("1 to 1000"),
            "{bad}: {v}"
        );
    }
}

#[tokio::test]
async fn one_series_gives_its_history_as_columns() {
    let app = app();
    let id = series_id("latency", "m", &labels("hot"));
    let (s, v) = json(&app, &format!("/api/v1/series/{id}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["labels"]["pod"], "hot");
    assert_eq!(v["latest"]["score"], 0.97);
    let p = &v["points"];
    for column in [
        "t",
        "value",
        "yhat",
        "yhat_lower",
        "yhat_upper",
        "score",
        "reason",
    ] {
        assert_eq!(p[column].as_array().unwrap().len(), 10, "{column}");
    }
    assert_eq!(p["t"][0], 1_700_000_000_000i64);
    assert_eq!(p["value"][9], 500.0);
    assert_eq!(p["yhat_lower"][9], 90.0);
    assert_eq!(p["reason"][9], "spike");
    assert_eq!(p["reason"][0], Value::Null);
}

#[tokio::test]
async fn a_series_without_history_still_has_its_latest_verdict() {
    let app = app();
    let id = series_id("latency", "m", &labels("unkept"));
    let (s, v) = json(&app, &format!("/api/v1/series/{id}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["latest"]["score"], 0.3);
    assert_eq!(v["points"]["t"], serde_json::json!([]));
}

#[tokio::test]
async fn unknown_and_malformed_series_ids() {
    let app = app();
    let (s, v) = json(&app, "/api/v1/series/0123456789abcdef").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(v["error"].as_str().unwrap().contains("GET /api/v1/series"));
    for bad in ["nope", "0123456789abcdeg", "0123456789abcdef0"] {
        let (s, v) = json(&app, &format!("/api/v1/series/{bad}")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
        assert!(v["error"].as_str().unwrap().contains("16 hex digits"));
    }
}

#[tokio::test]
async fn pages_and_assets_are_served_with_their_types() {
    let app = app();
    for page in ["/", "/ui/series/0123456789abcdef", "/ui/incidents/abc"] {
        let (s, ty, body) = send(&app, page).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        assert_eq!(ty, "text/html; charset=utf-8", "{page}");
        assert!(body.contains("/ui/assets/app.js"), "{page}");
    }
    for (asset, want) in [
        ("app.js", "text/javascript"),
        ("app.css", "text/css"),
        ("vendor/uplot/uPlot.iife.min.js", "text/javascript"),
        ("vendor/uplot/uPlot.min.css", "text/css"),
        ("vendor/uplot/LICENSE", "text/plain"),
    ] {
        let (s, ty, body) = send(&app, &format!("/ui/assets/{asset}")).await;
        assert_eq!(s, StatusCode::OK, "{asset}");
        assert!(ty.starts_with(want), "{asset}: {ty}");
        assert!(!body.is_empty(), "{asset}");
    }
    let (s, _, _) = send(&app, "/ui/assets/../Cargo.toml").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = send(&app, "/ui/assets/nothing.js").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn nothing_the_ui_loads_is_outside_the_daemon() {
    let app = app();
    let (_, _, html) = send(&app, "/").await;
    for attr in ["src=\"", "href=\""] {
        for link in html.split(attr).skip(1) {
            assert!(link.starts_with('/'), "{attr}{link}");
        }
    }
    // The only absolute URL in our own script is SVG's XML namespace, which is a name, not
    // a fetch.
    for asset in ["app.js", "app.css"] {
        let (_, _, text) = send(&app, &format!("/ui/assets/{asset}")).await;
        let urls = text
            .matches("http")
            .count()
            .saturating_sub(text.matches("http://www.w3.org/2000/svg").count());
        assert_eq!(urls, 0, "{asset} names an external URL");
    }
}
