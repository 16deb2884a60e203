//! The remote_write receiver router, driven without a socket (`tower::ServiceExt::oneshot`).

#![allow(clippy::unwrap_used)]

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode};
use portent_core::{Labels, Sample, Series, Timestamp};
use portent_prom::{ReceiverLimits, encode_write_request, proto, remote_write_router};
use prost::Message;
use tokio::sync::mpsc;
use tower::ServiceExt;

fn up(value: f64) -> Series {
    Series {
        labels: Labels::new([("__name__", "up"), ("job", "node")]).unwrap(),
        samples: vec![Sample::new(Timestamp::from_secs(1_700_000_000), value)],
    }
}

fn router(limits: ReceiverLimits) -> (Router, mpsc::Receiver<Vec<Series>>) {
    let (tx, rx) = mpsc::channel(8);
    (remote_write_router(tx, limits), rx)
}

fn post(body: Vec<u8>) -> Request<Body> {
    Request::post("/api/v1/write")
        .header("content-encoding", "snappy")
        .header("content-type", "application/x-protobuf")
        .header("x-prometheus-remote-write-version", "0.1.0")
        .body(Body::from(body))
        .unwrap()
}

async fn call(app: Router, req: Request<Body>) -> (StatusCode, String) {
    let response = app.oneshot(req).await.unwrap();
    let status = response.status();
    let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn accepted_body_reaches_the_sink_and_answers_204() {
    let (app, mut rx) = router(ReceiverLimits::default());
    let mut api = up(0.0);
    api.labels = api.labels.with("job", "api").unwrap();
    let input = vec![up(1.0), api];
    let (status, body) = call(app, post(encode_write_request(&input))).await;
    assert_eq!((status, body.as_str()), (StatusCode::NO_CONTENT, ""));
    assert_eq!(rx.try_recv().unwrap(), input);
}

#[tokio::test]
async fn empty_request_is_accepted_without_bothering_the_sink() {
    let (app, mut rx) = router(ReceiverLimits::default());
    let (status, _) = call(app, post(encode_write_request(&[]))).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(rx.try_recv().is_err());
}

#[tokio::test]
async fn malformed_bodies_get_400_with_the_reason_and_forward_nothing() {
    let bad_label = {
        let request = proto::WriteRequest {
            timeseries: vec![
                proto::TimeSeries {
                    labels: vec![proto::Label {
                        name: "__name__".into(),
                        value: "fine".into(),
                    }],
                    samples: vec![proto::Sample {
                        value: 1.0,
                        timestamp: 1,
                    }],
                },
                proto::TimeSeries {
                    labels: vec![proto::Label {
                        name: "bad-name".into(),
                        value: "x".into(),
                    }],
                    samples: vec![proto::Sample {
                        value: 1.0,
                        timestamp: 1,
                    }],
                },
            ],
        };
        snap::raw::Encoder::new()
            .compress_vec(&request.encode_to_vec())
            .unwrap()
    };
    let not_protobuf = snap::raw::Encoder::new()
        .compress_vec(b"\x0a\xff\xff")
        .unwrap();
    let uncompressed = proto::WriteRequest::default().encode_to_vec();
    for (body, want) in [
        (
            b"garbage!".to_vec(),
            "body is not snappy block-compressed data: ",
        ),
        (
            not_protobuf,
            "body is not a remote_write 1.0 WriteRequest: ",
        ),
        (
            bad_label,
            "timeseries[1]: label name \"bad-name\": must match [a-zA-Z_][a-zA-Z0-9_]*\n",
        ),
        (uncompressed, "body is not snappy block-compressed data: "),
    ] {
        let (app, mut rx) = router(ReceiverLimits::default());
        let (status, text) = call(app, post(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
        assert!(
            text.starts_with(want),
            "{text:?} should start with {want:?}"
        );
        assert!(rx.try_recv().is_err(), "nothing may reach the sink");
    }
}

#[tokio::test]
async fn over_the_size_limits_gets_413() {
    let big: Vec<Series> = (0..200)
        .map(|i| {
            let mut s = up(f64::from(i));
            s.labels = s.labels.with("i", &i.to_string()).unwrap();
            s
        })
        .collect();
    let body = encode_write_request(&big);

    // Over the compressed limit.
    let (app, mut rx) = router(ReceiverLimits {
        max_body_bytes: body.len() - 1,
        max_decompressed_bytes: 1 << 20,
    });
    let (status, text) = call(app, post(body.clone())).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{text}");
    assert_eq!(
        text,
        format!("body is over the limit of {} bytes\n", body.len() - 1)
    );
    assert!(rx.try_recv().is_err());

    // Under it, but over the decompressed limit.
    let (app, mut rx) = router(ReceiverLimits {
        max_body_bytes: 1 << 20,
        max_decompressed_bytes: 1000,
    });
    let (status, text) = call(app, post(body)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{text}");
    assert!(text.ends_with("over the limit of 1000\n"), "{text}");
    assert!(rx.try_recv().is_err());
}

#[tokio::test]
async fn remote_write_2_and_other_encodings_get_415() {
    let body = encode_write_request(&[up(1.0)]);
    let (app, mut rx) = router(ReceiverLimits::default());
    let v2 = Request::post("/api/v1/write")
        .header("content-encoding", "snappy")
        .header(
            "content-type",
            "application/x-protobuf;proto=io.prometheus.write.v2.Request",
        )
        .body(Body::from(body.clone()))
        .unwrap();
    let (status, text) = call(app.clone(), v2).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{text}");
    assert!(text.contains("remote_write 2.0 is not supported"), "{text}");
    let gzip = Request::post("/api/v1/write")
        .header("content-encoding", "gzip")
        .body(Body::from(body))
        .unwrap();
    let (status, _) = call(app, gzip).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(rx.try_recv().is_err());
}

#[tokio::test]
async fn closed_sink_gets_503_so_the_sender_retries() {
    let (app, rx) = router(ReceiverLimits::default());
    drop(rx);
    let (status, text) = call(app, post(encode_write_request(&[up(1.0)]))).await;
    assert_eq!(
        (status, text.as_str()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "receiver is shutting down\n"
        )
    );
}

#[tokio::test]
async fn only_post_on_the_write_path() {
    let (app, _rx) = router(ReceiverLimits::default());
    let get = Request::get("/api/v1/write").body(Body::empty()).unwrap();
    assert_eq!(
        app.clone().oneshot(get).await.unwrap().status(),
        StatusCode::METHOD_NOT_ALLOWED
    );
    let other = Request::post("/api/v1/push").body(Body::empty()).unwrap();
    assert_eq!(
        app.oneshot(other).await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn merges_into_a_bigger_router() {
    let (tx, mut rx) = mpsc::channel(1);
    let app = Router::new()
        .route("/-/healthy", axum::routing::get(|| async { "ok" }))
        .merge(remote_write_router(tx, ReceiverLimits::default()));
    let (status, _) = call(app.clone(), post(encode_write_request(&[up(2.0)]))).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(rx.try_recv().unwrap(), vec![up(2.0)]);
    let healthy = Request::get("/-/healthy").body(Body::empty()).unwrap();
    assert_eq!(call(app, healthy).await.0, StatusCode::OK);
}
