//! The remote_write receiver: an axum router fragment for `POST /api/v1/write`.

use std::future::Future;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use portent_core::Series;
use tokio::sync::mpsc;

use crate::decode::DecodedWrite;
use crate::error::RemoteWriteError;

/// Where the receiver hands decoded series. The request is answered only after `accept`
/// returns, so a slow sink slows the sender down (Prometheus then queues and retries) instead
/// of growing memory here.
///
/// The series come as a [`DecodedWrite`], whose label sets borrow the body: a sink that keeps
/// series by labels looks each up without allocating ([`DecodedWrite::for_each`]);
/// [`DecodedWrite::to_series`] gives owned series. The receiver reuses the `DecodedWrite` for
/// later requests once `accept` returns.
///
/// Implemented for `tokio::sync::mpsc::Sender<Vec<Series>>`: one message per request, and a
/// full channel is waited on.
pub trait Sink: Clone + Send + Sync + 'static {
    /// Takes the series of one request (never empty). An error answers 503, which remote_write
    /// senders retry.
    fn accept(&self, write: &DecodedWrite) -> impl Future<Output = Result<(), SinkClosed>> + Send;
}

/// The sink can take nothing more (it was shut down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("receiver is shutting down")]
pub struct SinkClosed;

impl Sink for mpsc::Sender<Vec<Series>> {
    async fn accept(&self, write: &DecodedWrite) -> Result<(), SinkClosed> {
        self.send(write.to_series()).await.map_err(|_| SinkClosed)
    }
}

/// Size limits of the receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReceiverLimits {
    /// The largest request body as sent (compressed); larger ones get 413.
    pub max_body_bytes: usize,
    /// The largest body once decompressed; larger ones get 413 without being decompressed.
    pub max_decompressed_bytes: usize,
}

impl Default for ReceiverLimits {
    /// 8 MiB compressed, 32 MiB decompressed: far above a Prometheus batch (a few thousand
    /// samples, tens of KiB), far below what would hurt.
    fn default() -> Self {
        Self {
            max_body_bytes: 8 << 20,
            max_decompressed_bytes: 32 << 20,
        }
    }
}

struct Receiver<S> {
    sink: S,
    limits: ReceiverLimits,
    /// Decode buffers of finished requests, for the next ones (see [`DecodedWrite`]).
    spare: Mutex<Vec<DecodedWrite>>,
}

/// Decode buffers kept between requests: as many as requests usually run at once.
const SPARE_BUFFERS: usize = 4;
/// A buffer grown past this by an unusually large body is dropped rather than kept.
const SPARE_MAX_BYTES: usize = 8 << 20;

impl<S> Receiver<S> {
    fn take_buffer(&self) -> DecodedWrite {
        self.spare
            .lock()
            .ok()
            .and_then(|mut spare| spare.pop())
            .unwrap_or_default()
    }

    fn give_back(&self, write: DecodedWrite) {
        if write.retained_bytes() > SPARE_MAX_BYTES {
            return;
        }
        if let Ok(mut spare) = self.spare.lock()
            && spare.len() < SPARE_BUFFERS
        {
            spare.push(write);
        }
    }
}

/// A router with `POST /api/v1/write` (remote_write 1.0), to merge into the daemon's router.
///
/// * `204 No Content`: every series was handed to `sink`;
/// * `400 Bad Request` with the reason as text (bad snappy, not a `WriteRequest`, an invalid
///   label set): nothing was handed to the sink;
/// * `413 Payload Too Large`: over a size limit, nothing decompressed or handed on;
/// * `415 Unsupported Media Type`: a remote_write 2.0 body or a `Content-Encoding` other than
///   snappy, which 2.0 senders take as the cue to fall back to 1.0;
/// * `503 Service Unavailable`: the sink is closed; senders retry.
pub fn remote_write_router<S: Sink>(sink: S, limits: ReceiverLimits) -> Router {
    Router::new()
        .route("/api/v1/write", post(write::<S>))
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .with_state(Arc::new(Receiver {
            sink,
            limits,
            spare: Mutex::new(Vec::new()),
        }))
}

async fn write<S: Sink>(
    State(receiver): State<Arc<Receiver<S>>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let header = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase)
    };
    if header(CONTENT_TYPE).is_some_and(|t| t.contains("io.prometheus.write.v2")) {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "remote_write 2.0 is not supported: send remote_write 1.0 (prometheus.WriteRequest)\n",
        )
            .into_response();
    }
    if header(CONTENT_ENCODING).is_some_and(|e| e.trim() != "snappy") {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content-encoding must be snappy\n",
        )
            .into_response();
    }
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let text = format!(
                "body is over the limit of {} bytes\n",
                receiver.limits.max_body_bytes
            );
            return (StatusCode::PAYLOAD_TOO_LARGE, text).into_response();
        }
        Err(rejection) => return rejection.into_response(),
    };
    let mut write = receiver.take_buffer();
    let response = match write.decode(&body, receiver.limits.max_decompressed_bytes) {
        Err(e) => {
            let status = match e {
                RemoteWriteError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                _ => StatusCode::BAD_REQUEST,
            };
            (status, format!("{e}\n")).into_response()
        }
        Ok(()) if write.is_empty() => StatusCode::NO_CONTENT.into_response(),
        Ok(()) => match receiver.sink.accept(&write).await {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
        },
    };
    receiver.give_back(write);
    response
}
