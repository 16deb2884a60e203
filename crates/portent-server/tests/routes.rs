//! The routers without a socket (`oneshot`): the exact exposition of a few scores, its shape
//! under Prometheus' expectations, expiry, health, readiness, reload and its token, and the
//! remote_write receiver mounted beside them.
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use portent_config::Secret;
use portent_core::{Labels, Reason, Sample, Score, Scored, Series, Timestamp};
use portent_server::{
    Control, OPENMETRICS_CONTENT_TYPE, Reloader, ScoreKey, Scores, SelfMetrics, router,
};
use prometheus_client::registry::Registry;
use tower::ServiceExt;

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

async fn send(app: &Router, req: Request<Body>) -> Answer {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let body = axum::body::to_bytes(res.into_body(), 1 << 24)
        .await
        .unwrap();
    Answer {
        status,
        headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

fn reload_request(token: Option<&str>) -> Request<Body> {
    let mut req = Request::post("/-/reload");
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, t);
    }
    req.body(Body::empty()).unwrap()
}

fn key(query: &str, model: &str, pairs: &[(&str, &str)]) -> ScoreKey {
    ScoreKey::new(
        query.into(),
        model.into(),
        Labels::new(pairs.iter().copied()).unwrap(),
    )
}

fn scored(t: i64, score: f64, yhat: f64, lower: f64, upper: f64) -> Scored {
    Scored {
        t: Timestamp::from_secs(t),
        value: 0.0,
        score: Score::new(score).unwrap(),
        yhat,
        yhat_lower: lower,
        yhat_upper: upper,
        reason: Some(Reason::Spike),
    }
}

/// A daemon's wiring: one registry with the scores and the self-metrics, a reloader that
/// counts its calls and fails when told to.
struct Daemon {
    app: Router,
    scores: Scores,
    metrics: SelfMetrics,
    control: Control,
    reloads: Arc<AtomicUsize>,
}

fn daemon(token: Option<&str>, fail_reload: bool, with_self_metrics: bool) -> Daemon {
    let mut registry = Registry::default();
    let scores = Scores::new();
    scores.register(&mut registry);
    let mut scratch = Registry::default();
    let metrics = SelfMetrics::new(if with_self_metrics {
        &mut registry
    } else {
        &mut scratch
    });
    let reloads = Arc::new(AtomicUsize::new(0));
    let counter = reloads.clone();
    let reloader = Reloader::new(metrics.clone(), move || {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            if fail_reload {
                Err("portent.yml:3:5: queries.cpu: unknown field `stepp`".into())
            } else {
                Ok(())
            }
        }
    });
    let control = Control::new(token.map(Secret::new), reloader);
    let app = router(control.clone(), Some(Arc::new(registry)), None);
    Daemon {
        app,
        scores,
        metrics,
        control,
        reloads,
    }
}

#[tokio::test]
async fn exposition_of_scores_is_exact() {
    let d = daemon(None, false, false);
    d.scores.update([
        (
            key(
                "http_p99",
                "latency",
                &[("namespace", "shop"), ("service", "cart")],
            ),
            scored(1_700_000_000, 0.25, 0.120, 0.1, 0.15),
        ),
        (
            // Escaping, a clashing `query` label and the input's metric name.
            key(
                "errors",
                "errors",
                &[
                    ("__name__", "kube_deployment_status_replicas_unavailable"),
                    ("deployment", "a\"b\\c\nd"),
                    ("query", "theirs"),
                ],
            ),
            scored(1_700_000_000, 1.0, 0.0, 0.0, 1.0),
        ),
        (
            // Not yet learnt: NaN expectation, exposed as NaN.
            key("http_p99", "latency", &[("service", "new")]),
            Scored::unknown(Timestamp::from_secs(1_700_000_000), 0.3),
        ),
    ]);
    let a = send(&d.app, get("/metrics")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        a.headers[header::CONTENT_TYPE],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert_eq!(OPENMETRICS_CONTENT_TYPE, a.headers[header::CONTENT_TYPE]);
    let expected = r#"# HELP portent_anomaly_score How unusual the latest sample of the input series is, in [0, 1]: 0 is expected, 0.8 the default alerting threshold. High at the onset of an anomaly and while it worsens.
# TYPE portent_anomaly_score gauge
portent_anomaly_score{metric="kube_deployment_status_replicas_unavailable",deployment="a\"b\\c\nd",exported_query="theirs",query="errors",model="errors"} 1.0
portent_anomaly_score{namespace="shop",service="cart",query="http_p99",model="latency"} 0.25
portent_anomaly_score{service="new",query="http_p99",model="latency"} 0.0
# HELP portent_yhat The value the model expected for the latest sample; NaN while it has not learnt enough to expect anything.
# TYPE portent_yhat gauge
portent_yhat{metric="kube_deployment_status_replicas_unavailable",deployment="a\"b\\c\nd",exported_query="theirs",query="errors",model="errors"} 0.0
portent_yhat{namespace="shop",service="cart",query="http_p99",model="latency"} 0.12
portent_yhat{service="new",query="http_p99",model="latency"} NaN
# HELP portent_yhat_lower The lower edge of the expected band; NaN while unknown.
# TYPE portent_yhat_lower gauge
portent_yhat_lower{metric="kube_deployment_status_replicas_unavailable",deployment="a\"b\\c\nd",exported_query="theirs",query="errors",model="errors"} 0.0
portent_yhat_lower{namespace="shop",service="cart",query="http_p99",model="latency"} 0.1
portent_yhat_lower{service="new",query="http_p99",model="latency"} NaN
# HELP portent_yhat_upper The upper edge of the expected band; NaN while unknown.
# TYPE portent_yhat_upper gauge
portent_yhat_upper{metric="kube_deployment_status_replicas_unavailable",deployment="a\"b\\c\nd",exported_query="theirs",query="errors",model="errors"} 1.0
portent_yhat_upper{namespace="shop",service="cart",query="http_p99",model="latency"} 0.15
portent_yhat_upper{service="new",query="http_p99",model="latency"} NaN
# EOF
"#;
    // Each family's samples come in the scores table's order, not sorted: compare each
    // family's lines as a set, and everything else line for line.
    let families = |text: &str| -> Vec<Vec<String>> {
        let mut out: Vec<Vec<String>> = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') || out.is_empty() {
                out.push(vec![line.to_owned()]);
            } else if let Some(last) = out.last_mut() {
                last.push(line.to_owned());
                last[1..].sort();
            }
        }
        out
    };
    assert_eq!(families(&a.body), families(expected), "actual:\n{}", a.body);
}

/// One line of the text format: `name{labels} value`, with label values unescaped.
fn parse_sample(line: &str) -> (String, Vec<(String, String)>, String) {
    let (name, rest) = match line.find('{') {
        Some(i) => (&line[..i], &line[i..]),
        None => line.split_at(line.find(' ').unwrap()),
    };
    let mut labels = Vec::new();
    let mut chars = rest.chars().peekable();
    if chars.peek() == Some(&'{') {
        chars.next();
        loop {
            let label: String = chars.by_ref().take_while(|&c| c != '=').collect();
            assert_eq!(chars.next(), Some('"'), "{line}");
            let mut value = String::new();
            loop {
                match chars.next().unwrap() {
                    '\\' => match chars.next().unwrap() {
                        'n' => value.push('\n'),
                        c @ ('\\' | '"') => value.push(c),
                        c => panic!("bad escape \\{c} in {line}"),
                    },
                    '"' => break,
                    '\n' => panic!("raw newline in {line}"),
                    c => value.push(c),
                }
            }
            labels.push((label, value));
            match chars.next() {
                Some(',') => {}
                Some('}') => break,
                c => panic!("unexpected {c:?} in {line}"),
            }
        }
    }
    let value: String = chars.collect();
    (name.to_owned(), labels, value.trim().to_owned())
}

#[tokio::test]
async fn exposition_meets_prometheus_expectations() {
    let d = daemon(None, false, true);
    d.scores.update([
        (
            key("q", "m", &[("pod", "x\ny"), ("model", "theirs")]),
            scored(1, 0.9, 1.0, 0.5, 1.5),
        ),
        (
            key("q", "m", &[("pod", "z")]),
            scored(1, 0.0, 1.0, 0.5, 1.5),
        ),
    ]);
    d.metrics.set_series_tracked(2);
    d.metrics
        .observe_fit("m", std::time::Duration::from_millis(3));
    d.metrics
        .observe_score("m", std::time::Duration::from_micros(30));
    d.metrics.inc_source_errors("pull");
    d.metrics.add_samples_ingested("push", 1000);
    d.metrics.add_fits(3, 1);
    d.metrics.inc_source_gap("q");
    d.metrics.inc_runs_skipped("default");
    d.metrics.set_state_size(4096);
    let a = send(&d.app, get("/metrics")).await;
    let body = a.body;
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert_eq!(body.matches("# EOF").count(), 1);

    let mut types: HashMap<String, String> = HashMap::new();
    let mut helps = HashSet::new();
    let mut seen = HashSet::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(helps.insert(name.to_owned()), "second HELP for {name}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(helps.contains(name), "TYPE before HELP for {name}");
            assert!(["gauge", "counter", "histogram"].contains(&kind), "{line}");
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "second TYPE for {name}"
            );
        } else if line.starts_with("# UNIT ") || line == "# EOF" {
        } else {
            assert!(!line.starts_with('#'), "unknown comment {line}");
            let (name, labels, value) = parse_sample(line);
            assert!(name.starts_with("portent_"), "{line}");
            let family = types
                .keys()
                .filter(|f| {
                    name == **f
                        || ["_total", "_bucket", "_sum", "_count", "_created"]
                            .iter()
                            .any(|s| name == format!("{f}{s}"))
                })
                .max_by_key(|f| f.len())
                .unwrap_or_else(|| panic!("sample before its TYPE: {line}"));
            if types[family] == "counter" {
                assert!(
                    name.ends_with("_total") || name.ends_with("_created"),
                    "{line}"
                );
            }
            let names: HashSet<&str> = labels.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names.len(), labels.len(), "repeated label in {line}");
            assert!(
                value == "NaN" || value.parse::<f64>().is_ok(),
                "bad value in {line}"
            );
            let mut id = labels.clone();
            id.sort();
            assert!(seen.insert((name.clone(), id)), "duplicate series {line}");
        }
    }
    for family in [
        "portent_anomaly_score",
        "portent_yhat",
        "portent_yhat_lower",
        "portent_yhat_upper",
        "portent_series_tracked",
        "portent_fit_duration_seconds",
        "portent_score_duration_seconds",
        "portent_source_errors",
        "portent_samples_ingested",
        "portent_runs_skipped",
        "portent_fits",
        "portent_source_gaps",
        "portent_state_size_bytes",
        "portent_config_reloads",
        "portent_config_last_reload_successful",
        "portent_config_last_reload_success_timestamp_seconds",
    ] {
        assert!(types.contains_key(family), "{family} missing:\n{body}");
    }
    assert!(body.contains("portent_anomaly_score{exported_model=\"theirs\",pod=\"x\\ny\",query=\"q\",model=\"m\"} 0.9\n"), "{body}");
    assert!(
        body.contains("portent_source_errors_total{source=\"pull\"} 1\n"),
        "{body}"
    );
    assert!(
        body.contains("portent_samples_ingested_total{source=\"push\"} 1000\n"),
        "{body}"
    );
    assert!(body.contains("portent_series_tracked 2\n"), "{body}");
    assert!(
        body.contains("portent_fits_total{outcome=\"fitted\"} 3\n")
            && body.contains("portent_fits_total{outcome=\"kept\"} 1\n")
            && body.contains("portent_source_gaps_total{query=\"q\"} 1\n"),
        "{body}"
    );
    assert!(body.contains("portent_state_size_bytes 4096\n"), "{body}");
    assert!(
        body.contains("portent_fit_duration_seconds_count{model=\"m\"} 1\n"),
        "{body}"
    );
}

/// Prometheus' own OpenMetrics parser, through promtool (Debian's `prometheus` package, which
/// scripts/test.sh installs): `tsdb create-blocks-from openmetrics` ingests only what parses.
/// It needs a timestamp on every sample, which a scrape answer has none of, so one is added.
#[tokio::test]
async fn exposition_parses_with_prometheus_openmetrics_parser() {
    let d = daemon(None, false, true);
    d.scores.update([
        (
            key(
                "q",
                "m",
                &[("__name__", "up"), ("path", "a\"b\\c\nd e"), ("query", "x")],
            ),
            scored(1, 0.9, 1.0, 0.5, 1.5),
        ),
        (
            key("q", "m", &[("pod", "z")]),
            Scored::unknown(Timestamp::from_secs(1), 0.0),
        ),
    ]);
    d.metrics
        .observe_fit("m", std::time::Duration::from_millis(3));
    d.metrics.inc_source_errors("pull");
    d.metrics.set_state_size(4096);
    let body = send(&d.app, get("/metrics")).await.body;
    let stamped: String = body
        .lines()
        .map(|l| {
            if l.starts_with('#') {
                format!("{l}\n")
            } else {
                format!("{l} 1700000000\n")
            }
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("scrape.om");
    std::fs::write(&input, &stamped).unwrap();
    let out = std::process::Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&input)
        .arg(dir.path().join("blocks"))
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool: {e} (install Debian's `prometheus` package; scripts/test.sh does)")
        });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}{}\n{stamped}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    let samples = body.lines().filter(|l| !l.starts_with('#')).count();
    assert!(
        stdout.split_whitespace().any(|w| w == samples.to_string()),
        "{samples} samples expected in:\n{stdout}"
    );
}

#[tokio::test]
async fn expired_series_leave_the_exposition() {
    let d = daemon(None, false, false);
    d.scores.update([
        (
            key("q", "m", &[("pod", "old")]),
            scored(100, 0.5, 1.0, 0.0, 2.0),
        ),
        (
            key("q", "m", &[("pod", "new")]),
            scored(200, 0.5, 1.0, 0.0, 2.0),
        ),
    ]);
    let before = send(&d.app, get("/metrics")).await.body;
    assert_eq!(before.matches("pod=\"old\"").count(), 4, "{before}");
    assert_eq!(d.scores.remove_older_than(Timestamp::from_secs(150)), 1);
    let after = send(&d.app, get("/metrics")).await.body;
    assert!(!after.contains("pod=\"old\""), "{after}");
    assert_eq!(after.matches("pod=\"new\"").count(), 4, "{after}");
    // A reload that drops model `m` removes its series wholesale.
    assert_eq!(d.scores.retain(|k, _| &*k.model != "m"), 1);
    assert!(!send(&d.app, get("/metrics")).await.body.contains("pod="));
}

#[tokio::test]
async fn healthy_at_once_ready_when_told() {
    let d = daemon(None, false, false);
    let a = send(&d.app, get("/-/healthy")).await;
    assert_eq!(
        (a.status, a.body.as_str()),
        (StatusCode::OK, "portent is healthy.\n")
    );
    let a = send(&d.app, get("/-/ready")).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(a.body.starts_with("portent is not ready yet"), "{}", a.body);
    d.control.set_ready(true);
    let a = send(&d.app, get("/-/ready")).await;
    assert_eq!(
        (a.status, a.body.as_str()),
        (StatusCode::OK, "portent is ready.\n")
    );
    let head = Request::head("/-/ready").body(Body::empty()).unwrap();
    assert_eq!(send(&d.app, head).await.status, StatusCode::OK);
}

#[tokio::test]
async fn reload_is_refused_without_a_configured_token() {
    let d = daemon(None, false, true);
    let a = send(&d.app, reload_request(Some("Bearer anything"))).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(a.body.contains("set server.bearer_token"), "{}", a.body);
    assert_eq!(d.reloads.load(Ordering::SeqCst), 0);
    let get_reload = send(&d.app, get("/-/reload")).await;
    assert_eq!(get_reload.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn reload_needs_the_right_bearer_token() {
    let d = daemon(Some("s3cret"), false, true);
    for (auth, why) in [
        (None, "needs Authorization: Bearer"),
        (Some("Bearer wrong"), "is not server.bearer_token"),
        (Some("Basic czNjcmV0"), "needs Authorization: Bearer"),
        (Some("Bearer s3cret-and-more"), "is not server.bearer_token"),
    ] {
        let a = send(&d.app, reload_request(auth)).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(
            a.headers[header::WWW_AUTHENTICATE],
            "Bearer realm=\"portent\""
        );
        assert!(a.body.contains(why), "{auth:?}: {}", a.body);
        assert!(!a.body.contains("s3cret"), "the token leaked: {}", a.body);
    }
    assert_eq!(d.reloads.load(Ordering::SeqCst), 0);

    let a = send(&d.app, reload_request(Some("bearer s3cret"))).await;
    assert_eq!(
        (a.status, a.body.as_str()),
        (StatusCode::OK, "config reloaded.\n")
    );
    let put = Request::put("/-/reload")
        .header(header::AUTHORIZATION, "Bearer s3cret")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&d.app, put).await.status, StatusCode::OK);
    assert_eq!(d.reloads.load(Ordering::SeqCst), 2);
    let body = send(&d.app, get("/metrics")).await.body;
    assert!(
        body.contains("portent_config_reloads_total{result=\"success\"} 2\n"),
        "{body}"
    );
    assert!(
        body.contains("portent_config_last_reload_successful 1\n"),
        "{body}"
    );

    // A reload that read a new token: the old one stops working.
    d.control.set_bearer_token(Some(Secret::new("rotated")));
    let a = send(&d.app, reload_request(Some("Bearer s3cret"))).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let a = send(&d.app, reload_request(Some("Bearer rotated"))).await;
    assert_eq!(a.status, StatusCode::OK);
}

#[tokio::test]
async fn failed_reload_says_why_and_is_counted() {
    let d = daemon(Some("t"), true, true);
    let a = send(&d.app, reload_request(Some("Bearer t"))).await;
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        a.body,
        "reload failed, the previous config is still in use: portent.yml:3:5: queries.cpu: \
         unknown field `stepp`\n"
    );
    let body = send(&d.app, get("/metrics")).await.body;
    assert!(
        body.contains("portent_config_reloads_total{result=\"failure\"} 1\n"),
        "{body}"
    );
    assert!(
        body.contains("portent_config_last_reload_successful 0\n"),
        "{body}"
    );
    // SIGHUP goes through the same reloader and is counted the same way.
    assert!(d.control.reloader().reload().await.is_err());
    let body = send(&d.app, get("/metrics")).await.body;
    assert!(
        body.contains("portent_config_reloads_total{result=\"failure\"} 2\n"),
        "{body}"
    );
}

#[tokio::test]
async fn remote_write_mounts_beside_and_metrics_can_move() {
    let mut registry = Registry::default();
    let metrics = SelfMetrics::new(&mut registry);
    let control = Control::new(None, Reloader::new(metrics, || async { Ok(()) }));
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Series>>(4);
    let receiver = portent_prom::remote_write_router(tx, portent_prom::ReceiverLimits::default());
    // /metrics on its own listener: the main router has none.
    let main = router(control, None, Some(receiver));
    let separate = portent_server::metrics_router(Arc::new(registry));

    let up = Series {
        labels: Labels::new([("__name__", "up"), ("job", "node")]).unwrap(),
        samples: vec![Sample::new(Timestamp::from_secs(1_700_000_000), 1.0)],
    };
    let body = portent_prom::encode_write_request(std::slice::from_ref(&up));
    let req = Request::post("/api/v1/write")
        .header(header::CONTENT_TYPE, "application/x-protobuf")
        .header(header::CONTENT_ENCODING, "snappy")
        .body(Body::from(body))
        .unwrap();
    assert_eq!(send(&main, req).await.status, StatusCode::NO_CONTENT);
    assert_eq!(rx.recv().await.unwrap(), vec![up]);

    assert_eq!(
        send(&main, get("/metrics")).await.status,
        StatusCode::NOT_FOUND
    );
    let a = send(&separate, get("/metrics")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(
        a.body.contains("# TYPE portent_series_tracked gauge"),
        "{}",
        a.body
    );
    assert_eq!(send(&main, get("/-/healthy")).await.status, StatusCode::OK);
}
