//! The clients against small in-test servers on loopback that answer as Prometheus would, or
//! misbehave on purpose: retries, Retry-After, headers and auth, chunking and stitching.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use portent_core::{Labels, Sample, Series, Timestamp};
use portent_prom::{
    Auth, Client, ClientConfig, ClientError, ReceiverLimits, RemoteWriteClient, RetryPolicy,
    remote_write_router,
};
use tokio::sync::mpsc;

/// What the fake server saw.
#[derive(Default)]
struct Seen {
    requests: Vec<(HeaderMap, HashMap<String, String>)>,
}

type Shared = Arc<Mutex<Seen>>;

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn record(seen: &Shared, headers: HeaderMap, body: &Bytes) -> usize {
    let form: HashMap<String, String> = form_urlencoded::parse(body).into_owned().collect();
    let mut s = seen.lock().unwrap();
    s.requests.push((headers, form));
    s.requests.len()
}

fn config(url: &str) -> ClientConfig {
    let mut c = ClientConfig::new(url);
    c.timeout = Duration::from_secs(5);
    c.retry = RetryPolicy {
        max_attempts: 4,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(100),
        jitter_seed: 1,
    };
    c
}

const EMPTY_MATRIX: &str = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;

/// One canned answer: status, headers, body.
type Answer = (StatusCode, Vec<(&'static str, &'static str)>, &'static str);

/// Answers `script[n]` to the n-th request (the last one from then on).
fn scripted(script: Vec<Answer>) -> (Router, Shared) {
    let seen = Shared::default();
    let script = Arc::new(script);
    let app = Router::new()
        .route(
            "/api/v1/query",
            post(
                move |State(seen): State<Shared>, headers: HeaderMap, body: Bytes| {
                    let script = script.clone();
                    async move {
                        let n = record(&seen, headers, &body);
                        let (status, headers, body) = &script[(n - 1).min(script.len() - 1)];
                        let mut r = (*status, *body).into_response();
                        for (k, v) in headers {
                            r.headers_mut().insert(*k, v.parse().unwrap());
                        }
                        r
                    }
                },
            ),
        )
        .with_state(seen.clone());
    (app, seen)
}

fn attempts(seen: &Shared) -> usize {
    seen.lock().unwrap().requests.len()
}

#[tokio::test]
async fn retries_5xx_and_429_then_succeeds() {
    let vector = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"up"},"value":[1700000000,"1"]}]}}"#;
    let (app, seen) = scripted(vec![
        (StatusCode::SERVICE_UNAVAILABLE, vec![], "warming up"),
        (
            StatusCode::TOO_MANY_REQUESTS,
            vec![("retry-after", "0")],
            "slow down",
        ),
        (StatusCode::BAD_GATEWAY, vec![], "proxy"),
        (StatusCode::OK, vec![], vector),
    ]);
    let client = Client::new(&config(&serve(app).await)).unwrap();
    let got = client
        .query("up", Timestamp::from_secs(1_700_000_000))
        .await
        .unwrap();
    assert_eq!(
        got[0].samples,
        [Sample::new(Timestamp::from_secs(1_700_000_000), 1.0)]
    );
    assert_eq!(attempts(&seen), 4);
}

#[tokio::test]
async fn gives_up_after_max_attempts_with_the_last_status() {
    let (app, seen) = scripted(vec![(StatusCode::INTERNAL_SERVER_ERROR, vec![], "boom")]);
    let url = serve(app).await;
    let err = Client::new(&config(&url))
        .unwrap()
        .query("up", Timestamp::from_secs(1))
        .await
        .unwrap_err();
    assert_eq!(attempts(&seen), 4);
    assert_eq!(
        err.to_string(),
        format!("{url}/api/v1/query: http status 500: boom")
    );
    assert!(matches!(
        err,
        ClientError::Status {
            status: 500,
            attempts: 4,
            ..
        }
    ));
}

#[tokio::test]
async fn never_retries_4xx_and_keeps_the_server_message() {
    let body = r#"{"status":"error","errorType":"bad_data","error":"1:5: parse error: unclosed left parenthesis"}"#;
    let (app, seen) = scripted(vec![(StatusCode::BAD_REQUEST, vec![], body)]);
    let url = serve(app).await;
    let err = Client::new(&config(&url))
        .unwrap()
        .query("sum(", Timestamp::from_secs(1))
        .await
        .unwrap_err();
    assert_eq!(attempts(&seen), 1);
    assert_eq!(
        err.to_string(),
        format!("{url}/api/v1/query: bad_data: 1:5: parse error: unclosed left parenthesis")
    );
    assert!(err.is_permanent());
    let (app, seen) = scripted(vec![(StatusCode::UNAUTHORIZED, vec![], "Unauthorized")]);
    let err = Client::new(&config(&serve(app).await))
        .unwrap()
        .query("up", Timestamp::from_secs(1))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Status {
                status: 401,
                attempts: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(attempts(&seen), 1);
}

#[tokio::test]
async fn honours_retry_after() {
    let (app, seen) = scripted(vec![
        (
            StatusCode::SERVICE_UNAVAILABLE,
            vec![("retry-after", "1")],
            "",
        ),
        (StatusCode::OK, vec![], EMPTY_MATRIX),
    ]);
    let mut c = config(&serve(app).await);
    c.retry.max_backoff = Duration::from_secs(5);
    let t = Instant::now();
    Client::new(&c)
        .unwrap()
        .query("up", Timestamp::from_secs(1))
        .await
        .unwrap();
    let elapsed = t.elapsed();
    assert_eq!(attempts(&seen), 2);
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn a_slow_server_times_out_and_says_so() {
    let app = Router::new().route(
        "/api/v1/query",
        post(|| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            EMPTY_MATRIX
        }),
    );
    let mut c = config(&serve(app).await);
    c.timeout = Duration::from_millis(200);
    c.retry.max_attempts = 2;
    let t = Instant::now();
    let err = Client::new(&c)
        .unwrap()
        .query("up", Timestamp::from_secs(1))
        .await
        .unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(
        matches!(
            &err,
            ClientError::Transport {
                kind: portent_prom::TransportKind::Timeout,
                attempts: 2,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("timed out"), "{err}");
}

#[tokio::test]
async fn sends_auth_and_custom_headers_and_the_form() {
    let (app, seen) = scripted(vec![(StatusCode::OK, vec![], EMPTY_MATRIX)]);
    let url = serve(app).await;
    let mut c = config(&url);
    c.auth = Some(Auth::Bearer("t0ken".into()));
    c.headers.push(("X-Scope-OrgID".into(), "tenant-1".into()));
    Client::new(&c)
        .unwrap()
        .query(
            r#"up{job="a b"}"#,
            Timestamp::from_millis(1_700_000_000_250),
        )
        .await
        .unwrap();
    let mut c = config(&url);
    c.auth = Some(Auth::Basic {
        username: "admin".into(),
        password: "s3cret".into(),
    });
    Client::new(&c)
        .unwrap()
        .query("up", Timestamp::from_secs(1))
        .await
        .unwrap();

    let s = seen.lock().unwrap();
    let (h, form) = &s.requests[0];
    assert_eq!(h["authorization"], "Bearer t0ken");
    assert_eq!(h["x-scope-orgid"], "tenant-1");
    assert_eq!(h["content-type"], "application/x-www-form-urlencoded");
    assert!(h["user-agent"].to_str().unwrap().starts_with("portent/"));
    assert_eq!(form["query"], r#"up{job="a b"}"#);
    assert_eq!(form["time"], "1700000000.250");
    assert_eq!(s.requests[1].0["authorization"], "Basic YWRtaW46czNjcmV0");
}

/// Where the fake's second series starts to exist (ms).
const B_FROM: i64 = 1_999_150_000_000;

/// A query_range that behaves like Prometheus (refuses more than `limit` points) and, if
/// `align`, like VictoriaMetrics (snaps start down to a multiple of the step, so a chunk's first
/// point can repeat the previous chunk's last).
fn fake_query_range(limit: i64, align: bool) -> (Router, Shared) {
    let seen = Shared::default();
    let app = Router::new()
        .route(
            "/api/v1/query_range",
            post(move |State(seen): State<Shared>, headers: HeaderMap, body: Bytes| async move {
                record(&seen, headers, &body);
                let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
                let ms = |k: &str| (form[k].parse::<f64>().unwrap() * 1000.0).round() as i64;
                let (mut start, end, step) = (ms("start"), ms("end"), ms("step"));
                if (end - start) / step + 1 > limit {
                    let body = format!(
                        r#"{{"status":"error","errorType":"bad_data","error":"exceeded maximum resolution of {limit} points per timeseries"}}"#
                    );
                    return (StatusCode::BAD_REQUEST, body).into_response();
                }
                if align {
                    // Snap down, then one more step back: the previous chunk's last point again.
                    start = start - start.rem_euclid(step) - step;
                }
                let values = |offset: f64| {
                    (0..)
                        .map(|k| start + k * step)
                        .take_while(|t| *t <= end)
                        .map(|t| format!(r#"[{},"{}"]"#, t as f64 / 1000.0, t as f64 / 1000.0 + offset))
                        .collect::<Vec<_>>()
                        .join(",")
                };
                // Series b only appears in chunks that end after B_FROM: new series come and go.
                let mut result = vec![format!(
                    r#"{{"metric":{{"__name__":"m","s":"a"}},"values":[{}]}}"#,
                    values(0.0)
                )];
                if end >= B_FROM {
                    result.push(format!(
                        r#"{{"metric":{{"__name__":"m","s":"b"}},"values":[{}]}}"#,
                        values(0.5)
                    ));
                }
                let body = format!(
                    r#"{{"status":"success","data":{{"resultType":"matrix","result":[{}]}}}}"#,
                    result.join(",")
                );
                body.into_response()
            }),
        )
        .with_state(seen.clone());
    (app, seen)
}

fn check_stitched(got: &[Series], start_ms: i64, end_ms: i64, step_ms: i64) {
    let a = &got[0];
    assert_eq!(
        a.labels,
        Labels::new([("__name__", "m"), ("s", "a")]).unwrap()
    );
    let want: Vec<i64> = (0..)
        .map(|k| start_ms + k * step_ms)
        .take_while(|t| *t <= end_ms)
        .collect();
    let times: Vec<i64> = a.samples.iter().map(|s| s.t.millis()).collect();
    // Each point once, in order (an aligned server may add one point before the start).
    let times_in: Vec<i64> = times.iter().copied().filter(|t| *t >= start_ms).collect();
    assert_eq!(times_in, want);
    assert!(times.windows(2).all(|w| w[0] < w[1]));
    assert!(
        a.samples
            .iter()
            .all(|s| s.v == s.t.millis() as f64 / 1000.0)
    );
    if let Some(b) = got.get(1) {
        assert!(b.samples.windows(2).all(|w| w[0].t < w[1].t));
        assert!(
            b.samples
                .iter()
                .all(|s| s.v == s.t.millis() as f64 / 1000.0 + 0.5)
        );
    }
}

#[tokio::test]
async fn query_range_splits_under_the_limit_and_stitches_in_order() {
    let (app, seen) = fake_query_range(11_000, false);
    let client = Client::new(&config(&serve(app).await)).unwrap();
    // 25,001 points at 15 s: 11,000 + 11,000 + 3,001.
    let (start, step) = (1_900_000_000_000i64, 15_000i64);
    let end = start + 25_000 * step;
    let got = client
        .query_range(
            "m",
            Timestamp::from_millis(start),
            Timestamp::from_millis(end),
            Duration::from_millis(step as u64),
        )
        .await
        .unwrap();
    check_stitched(&got, start, end, step);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].samples.len(), 25_001);
    let s = seen.lock().unwrap();
    let asked: Vec<(String, String)> = s
        .requests
        .iter()
        .map(|(_, f)| (f["start"].clone(), f["end"].clone()))
        .collect();
    assert_eq!(
        asked,
        [
            ("1900000000".to_owned(), "1900164985".to_owned()),
            ("1900165000".to_owned(), "1900329985".to_owned()),
            ("1900330000".to_owned(), "1900375000".to_owned()),
        ]
    );
    assert!(
        s.requests
            .iter()
            .all(|(_, f)| f["step"] == "15" && f["query"] == "m")
    );
}

#[tokio::test]
async fn query_range_drops_points_a_server_repeats_at_chunk_edges() {
    let (app, seen) = fake_query_range(1_000, true);
    let client = Client::new(&config(&serve(app).await))
        .unwrap()
        .with_max_points_per_series(999)
        .unwrap();
    // A start 7 s off the minute grid, which the fake snaps to.
    let (start, step) = (1_999_000_007_000i64, 60_000i64);
    let end = start + 5_000 * step;
    let got = client
        .query_range(
            "m",
            Timestamp::from_millis(start),
            Timestamp::from_millis(end),
            Duration::from_millis(step as u64),
        )
        .await
        .unwrap();
    assert_eq!(attempts(&seen), 6);
    // The fake answers on its own grid, from one step before the snapped start.
    let first = start - start.rem_euclid(step) - step;
    let last = end - end.rem_euclid(step);
    check_stitched(&got, first, last, step);
    assert_eq!(got[0].samples.len() as i64, (last - first) / step + 1);
    // Series b appears only in later chunks, and is still one series to the end.
    assert_eq!(got.len(), 2);
    let b = &got[1].samples;
    assert!(b[0].t.millis() > first + step && b.last().unwrap().t.millis() == last);
}

#[tokio::test]
async fn query_range_refuses_impossible_requests_without_asking() {
    let client = Client::new(&config("http://127.0.0.1:9")).unwrap();
    let err = client
        .query_range(
            "m",
            Timestamp::from_secs(10),
            Timestamp::from_secs(5),
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "query_range: end 5000 is before start 10000"
    );
    let err = client
        .query_range(
            "m",
            Timestamp::from_secs(1),
            Timestamp::from_secs(5),
            Duration::ZERO,
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "query_range: step 0ns: must be at least 1ms"
    );
}

#[tokio::test]
async fn unparseable_success_is_a_decode_error() {
    let (app, _) = scripted(vec![(StatusCode::OK, vec![], "<html>login</html>")]);
    let url = serve(app).await;
    let err = Client::new(&config(&url))
        .unwrap()
        .query("up", Timestamp::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Decode { .. }), "{err:?}");
    let prefix = format!("{url}/api/v1/query: unreadable response: ");
    assert!(err.to_string().starts_with(&prefix), "{err}");
    assert!(err.to_string().contains("expected a JSON object"), "{err}");
}

#[tokio::test]
async fn remote_write_client_into_our_receiver_with_batching() {
    let (tx, mut rx) = mpsc::channel::<Vec<Series>>(16);
    let url = serve(remote_write_router(tx, ReceiverLimits::default())).await;
    let writer = RemoteWriteClient::new(&config(&format!("{url}/api/v1/write")))
        .unwrap()
        .with_max_samples_per_request(4)
        .unwrap();
    let series: Vec<Series> = (0..3)
        .map(|i| Series {
            labels: Labels::new([("__name__", "portent_anomaly_score"), ("i", &i.to_string())])
                .unwrap(),
            samples: (0..3)
                .map(|t| Sample::new(Timestamp::from_secs(t), f64::from(i) + 0.5))
                .collect(),
        })
        .collect();
    writer.write(&series).await.unwrap();
    // 9 samples at most 4 per request: 3 requests.
    let mut got: Vec<Vec<Series>> = Vec::new();
    while let Ok(batch) = rx.try_recv() {
        got.push(batch);
    }
    assert_eq!(got.len(), 3);
    let mut merged: Vec<(Labels, Vec<Sample>)> = Vec::new();
    for s in got.into_iter().flatten() {
        match merged.last_mut() {
            Some((l, samples)) if *l == s.labels => samples.extend(s.samples),
            _ => merged.push((s.labels, s.samples)),
        }
    }
    let want: Vec<(Labels, Vec<Sample>)> =
        series.into_iter().map(|s| (s.labels, s.samples)).collect();
    assert_eq!(merged, want);

    // A body the receiver refuses: 400, not retried, reason kept.
    let err = writer.send(b"not snappy").await.unwrap_err();
    assert!(
        matches!(
            &err,
            ClientError::Status {
                status: 400,
                attempts: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("body is not snappy block-compressed data"),
        "{err}"
    );
}

#[tokio::test]
async fn remote_write_client_retries_5xx_and_sends_the_protocol_headers() {
    let seen = Shared::default();
    let app = Router::new()
        .route(
            "/api/v1/write",
            post(
                |State(seen): State<Shared>, headers: HeaderMap, body: Bytes| async move {
                    let n = record(&seen, headers, &Bytes::new());
                    if n < 3 {
                        return (StatusCode::SERVICE_UNAVAILABLE, "later").into_response();
                    }
                    let series = portent_prom::decode_write_request(&body, 1 << 20).unwrap();
                    assert_eq!(series.len(), 1);
                    Response::builder()
                        .status(204)
                        .body(axum::body::Body::empty())
                        .unwrap()
                },
            ),
        )
        .with_state(seen.clone());
    let url = serve(app).await;
    let writer = RemoteWriteClient::new(&config(&format!("{url}/api/v1/write"))).unwrap();
    let s = Series {
        labels: Labels::new([("__name__", "x")]).unwrap(),
        samples: vec![Sample::new(Timestamp::from_secs(1), 1.0)],
    };
    writer.write(&[s]).await.unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.requests.len(), 3);
    let h = &seen.requests[2].0;
    assert_eq!(h["content-encoding"], "snappy");
    assert_eq!(h["content-type"], "application/x-protobuf");
    assert_eq!(h["x-prometheus-remote-write-version"], "0.1.0");
}
