//! The web UI: three pages and the JSON they read, with every asset compiled into the binary
//! so that it works with no internet access.
//!
//! | method and path | what |
//! |---|---|
//! | `GET /` | overview: series ranked by current score with sparklines, open incidents |
//! | `GET /ui/series/{id}` | one series: actual values, expected band, anomalies, reasons; drag to zoom |
//! | `GET /ui/incidents/{id}` | one incident: timeline, root-cause candidates, evidence, explanation, feedback buttons |
//! | `GET /ui/assets/…` | the pages' script and style, and uPlot (vendored with its licence) |
//! | `GET /api/v1/series?limit=N` | series ranked by current score (default 50, at most 1000), each with a sparkline |
//! | `GET /api/v1/series/{id}` | one series' recent verdicts from the [`History`], as columns |
//!
//! The three page paths serve the same document; its script reads the path and draws the
//! page, so a link to any page can be bookmarked. Incidents and feedback come from the
//! incidents API ([`crate::incidents`]); feedback needs `server.bearer_token`, which the page
//! asks for and keeps in the browser's local storage.

use std::collections::BTreeMap;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use portent_core::{Labels, Reason};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::history::{History, Point, is_series_id, series_id};
use crate::{ScoreKey, Scores};

/// Series listed when `limit` is not given.
const DEFAULT_LIMIT: usize = 50;
/// The most series one list answer holds.
const MAX_LIMIT: usize = 1000;
/// Values in a sparkline: the last hour at a one-minute step.
const SPARKLINE_POINTS: usize = 60;

/// The page document: one for all pages.
const INDEX_HTML: &str = include_str!("../assets/index.html");

/// The files under `/ui/assets/`: path, content type, bytes.
const ASSETS: [(&str, &str, &[u8]); 5] = [
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/app.css"),
    ),
    (
        "vendor/uplot/uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/vendor/uplot/uPlot.iife.min.js"),
    ),
    (
        "vendor/uplot/uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/vendor/uplot/uPlot.min.css"),
    ),
    (
        "vendor/uplot/LICENSE",
        "text/plain; charset=utf-8",
        include_bytes!("../assets/vendor/uplot/LICENSE"),
    ),
];

/// The UI's pages, assets and series API, reading `scores` (the latest verdicts) and
/// `history` (recent ones).
pub fn ui_router(scores: Scores, history: History) -> Router {
    Router::new()
        .route("/api/v1/series", get(list))
        .route("/api/v1/series/{id}", get(one))
        .route("/", get(page))
        .route("/ui/series/{id}", get(page))
        .route("/ui/incidents/{id}", get(page))
        .route("/ui/assets/{*path}", get(asset))
        .with_state(Ui { scores, history })
}

#[derive(Clone)]
struct Ui {
    scores: Scores,
    history: History,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

async fn page() -> Response {
    (
        [
            (CONTENT_TYPE, "text/html; charset=utf-8"),
            (CACHE_CONTROL, "no-cache"),
        ],
        INDEX_HTML,
    )
        .into_response()
}

async fn asset(Path(path): Path<String>) -> Response {
    match ASSETS.iter().find(|(p, _, _)| *p == path) {
        // Assets change only with the binary; revalidating each load is cheap on loopback and
        // means an upgrade is never shown with a stale script.
        Some((_, ty, bytes)) => {
            ([(CONTENT_TYPE, *ty), (CACHE_CONTROL, "no-cache")], *bytes).into_response()
        }
        None => (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    }
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<String>,
}

/// A series as listed.
#[derive(Serialize)]
struct Listed<'a> {
    id: String,
    /// The labels as PromQL would write them: `name{a="b"}`.
    series: String,
    query: &'a str,
    model: &'a str,
    labels: BTreeMap<&'a str, &'a str>,
    /// Milliseconds since the epoch of the latest verdict.
    t: i64,
    value: f64,
    yhat: f64,
    yhat_lower: f64,
    yhat_upper: f64,
    score: f64,
    reason: Option<Reason>,
    /// The last values, oldest first (NaN as null).
    sparkline: Vec<f32>,
}

async fn list(State(ui): State<Ui>, Query(q): Query<ListQuery>) -> Response {
    let limit = match q.limit.as_deref() {
        None | Some("") => DEFAULT_LIMIT,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("limit={text:?}: use a whole number from 1 to {MAX_LIMIT}"),
                );
            }
        },
    };
    let ranked = ui.scores.ranked(limit);
    let series: Vec<Listed<'_>> = ranked
        .iter()
        .map(|(key, s)| Listed {
            id: id_of(key),
            series: key.labels.to_string(),
            query: &key.query,
            model: &key.model,
            labels: label_map(&key.labels),
            t: s.t.millis(),
            value: s.value,
            yhat: s.yhat,
            yhat_lower: s.yhat_lower,
            yhat_upper: s.yhat_upper,
            score: s.score.get(),
            reason: s.reason,
            sparkline: ui
                .history
                .recent(key, SPARKLINE_POINTS)
                .iter()
                .map(|p| p.value)
                .collect(),
        })
        .collect();
    Json(json!({ "total": ui.scores.len(), "series": series })).into_response()
}

/// Labels as a JSON object, name to value (the `Labels` serde form is a list of pairs, for
/// state files).
fn label_map(labels: &Labels) -> BTreeMap<&str, &str> {
    labels.iter().map(|l| (l.name, l.value)).collect()
}

fn id_of(key: &ScoreKey) -> String {
    series_id(&key.query, &key.model, &key.labels)
}

/// A series' verdicts as columns, as a chart library takes them.
#[derive(Serialize, Default)]
struct Columns {
    /// Milliseconds since the epoch.
    t: Vec<i64>,
    value: Vec<f32>,
    yhat: Vec<f32>,
    yhat_lower: Vec<f32>,
    yhat_upper: Vec<f32>,
    score: Vec<f32>,
    reason: Vec<Option<Reason>>,
}

impl Columns {
    fn of(points: &[Point]) -> Self {
        let mut c = Columns::default();
        for p in points {
            c.t.push(p.t.millis());
            c.value.push(p.value);
            c.yhat.push(p.yhat);
            c.yhat_lower.push(p.yhat_lower);
            c.yhat_upper.push(p.yhat_upper);
            c.score.push(p.score);
            c.reason.push(p.reason);
        }
        c
    }
}

async fn one(State(ui): State<Ui>, Path(id): Path<String>) -> Response {
    if !is_series_id(&id) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{id:?} is not a series ID (16 hex digits, as GET /api/v1/series gives)"),
        );
    }
    let (key, points) = match ui.history.get(&id) {
        Some(found) => found,
        // Not kept in the history (it is bounded): the latest verdict still says something.
        None => match ui.scores.find(|k| id_of(k) == id) {
            Some((key, _)) => (key, Vec::new()),
            None => {
                return error(
                    StatusCode::NOT_FOUND,
                    format!(
                        "no series {id}: it may have expired; GET /api/v1/series lists those \
                         scored"
                    ),
                );
            }
        },
    };
    let latest = ui.scores.get(&key).map(|s| {
        json!({
            "t": s.t.millis(),
            "value": s.value,
            "yhat": s.yhat,
            "yhat_lower": s.yhat_lower,
            "yhat_upper": s.yhat_upper,
            "score": s.score.get(),
            "reason": s.reason,
        })
    });
    Json(json!({
        "id": id,
        "series": key.labels.to_string(),
        "query": &*key.query,
        "model": &*key.model,
        "labels": label_map(&key.labels),
        "latest": latest,
        "points": Columns::of(&points),
    }))
    .into_response()
}
