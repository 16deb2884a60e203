//! The HTTP routes: `/metrics`, `/-/healthy`, `/-/ready`, `/-/reload`.

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

use axum::Router;
use axum::extract::State;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use portent_config::Secret;
use prometheus_client::registry::Registry;

use crate::SelfMetrics;

/// The content type of the `/metrics` answer: OpenMetrics text 1.0.0, which Prometheus asks
/// for first and parses natively.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Why a reload failed, as the callback reports it (e.g. a `portent_config::ConfigError`).
pub type ReloadError = Box<dyn Error + Send + Sync>;

type ReloadFuture = Pin<Box<dyn Future<Output = Result<(), ReloadError>> + Send>>;
type ReloadFn = dyn Fn() -> ReloadFuture + Send + Sync;

/// Reloads the config through a callback the daemon supplies, one reload at a time, counting
/// each in the self-metrics. SIGHUP and `POST /-/reload` both go through it, so both are
/// counted the same way.
#[derive(Clone)]
pub struct Reloader {
    reload: Arc<ReloadFn>,
    metrics: SelfMetrics,
    one_at_a_time: Arc<tokio::sync::Mutex<()>>,
}

impl fmt::Debug for Reloader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reloader").finish_non_exhaustive()
    }
}

impl Reloader {
    /// A reloader calling `reload`, which loads the config and applies it, or fails and leaves
    /// the running config as it was.
    pub fn new<F, Fut>(metrics: SelfMetrics, reload: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), ReloadError>> + Send + 'static,
    {
        Self {
            reload: Arc::new(move || Box::pin(reload()) as ReloadFuture),
            metrics,
            one_at_a_time: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// Runs the callback (after any reload in progress) and counts the outcome.
    pub async fn reload(&self) -> Result<(), ReloadError> {
        let _guard = self.one_at_a_time.lock().await;
        let result = (self.reload)().await;
        self.metrics
            .record_reload(result.is_ok(), SystemTime::now());
        result
    }
}

/// What the daemon and the HTTP routes share: readiness, the API token and the reloader.
/// Cloning shares them.
#[derive(Clone, Debug)]
pub struct Control {
    inner: Arc<ControlInner>,
}

#[derive(Debug)]
struct ControlInner {
    ready: AtomicBool,
    token: RwLock<Option<Secret>>,
    reloader: Reloader,
}

impl Control {
    /// Not ready; state-changing endpoints need `token` (`server.bearer_token`) and are
    /// refused without one.
    pub fn new(token: Option<Secret>, reloader: Reloader) -> Self {
        Self {
            inner: Arc::new(ControlInner {
                ready: AtomicBool::new(false),
                token: RwLock::new(token),
                reloader,
            }),
        }
    }

    /// Marks portent ready (state loaded, sources started) or not; `/-/ready` answers 200 only
    /// while ready.
    pub fn set_ready(&self, ready: bool) {
        self.inner.ready.store(ready, Ordering::Release);
    }

    /// Whether `/-/ready` answers 200.
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
    }

    /// Replaces the API token, after a reload read a new `server.bearer_token`.
    pub fn set_bearer_token(&self, token: Option<Secret>) {
        *self
            .inner
            .token
            .write()
            .unwrap_or_else(PoisonError::into_inner) = token;
    }

    /// The reloader, for the daemon's SIGHUP handler.
    pub fn reloader(&self) -> &Reloader {
        &self.inner.reloader
    }

    /// Checks `Authorization: Bearer …` against `server.bearer_token`, for a route that
    /// changes state: `None` when it matches, else the answer to give (401, or 403 without a
    /// token configured).
    pub fn refusal(&self, headers: &HeaderMap) -> Option<Response> {
        self.authorize(headers)
            .err()
            .map(IntoResponse::into_response)
    }

    /// Checks `Authorization: Bearer …` against the configured token.
    fn authorize(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let token = self
            .inner
            .token
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(token) = token.as_ref() else {
            return Err(Refusal::NoTokenConfigured);
        };
        let given = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim());
        match given {
            None => Err(Refusal::NoBearerToken),
            Some(t) if constant_time_eq(t.as_bytes(), token.expose().as_bytes()) => Ok(()),
            Some(_) => Err(Refusal::WrongToken),
        }
    }
}

/// Why a request to an endpoint that changes state was refused.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Refusal {
    /// No `server.bearer_token`: such endpoints are off (403).
    NoTokenConfigured,
    /// No `Authorization: Bearer …` header (401).
    NoBearerToken,
    /// A bearer token other than the configured one (401).
    WrongToken,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let unauthorized = |text: &'static str| {
            (
                StatusCode::UNAUTHORIZED,
                [(WWW_AUTHENTICATE, "Bearer realm=\"portent\"")],
                text,
            )
                .into_response()
        };
        match self {
            Refusal::NoTokenConfigured => (
                StatusCode::FORBIDDEN,
                "endpoints that change state are disabled: set server.bearer_token (or \
                 bearer_token_file, bearer_token_env) in the config and send it as \
                 Authorization: Bearer <token>\n",
            )
                .into_response(),
            Refusal::NoBearerToken => {
                unauthorized("this endpoint needs Authorization: Bearer <server.bearer_token>\n")
            }
            Refusal::WrongToken => unauthorized("the bearer token is not server.bearer_token\n"),
        }
    }
}

/// Compares without returning early on the first differing byte, so the time taken does not
/// tell an attacker how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `GET /-/healthy`, `GET /-/ready` and `POST`/`PUT /-/reload` (Prometheus' paths and
/// methods).
///
/// * `/-/healthy`: 200 while the process serves;
/// * `/-/ready`: 200 once [`Control::set_ready`] was called with `true`, 503 before;
/// * `/-/reload`: 200 when the reload callback succeeded, 500 with its error when it failed
///   (the running config stays), 401 without the right bearer token, 403 when no token is
///   configured.
pub fn control_router(control: Control) -> Router {
    Router::new()
        .route("/-/healthy", get(healthy))
        .route("/-/ready", get(ready))
        .route("/-/reload", post(reload).put(reload))
        .with_state(control)
}

/// `GET /metrics`: everything in `registry` (scores and self-metrics) as OpenMetrics text.
pub fn metrics_router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(Exposition {
            registry,
            last_len: Arc::new(AtomicUsize::new(0)),
        })
}

/// What `/metrics` encodes, and how long the last encoding was.
#[derive(Clone)]
struct Exposition {
    registry: Arc<Registry>,
    last_len: Arc<AtomicUsize>,
}

/// Everything on `server.listen`: the control routes, `/metrics` unless it is served on
/// `server.metrics_listen` (then pass `None` and serve [`metrics_router`] there), and any
/// further routes such as `portent_prom::remote_write_router` (`POST /api/v1/write`).
pub fn router(control: Control, metrics: Option<Arc<Registry>>, extra: Option<Router>) -> Router {
    let mut app = control_router(control);
    if let Some(registry) = metrics {
        app = app.merge(metrics_router(registry));
    }
    if let Some(extra) = extra {
        app = app.merge(extra);
    }
    app
}

async fn healthy() -> &'static str {
    "portent is healthy.\n"
}

async fn ready(State(control): State<Control>) -> Response {
    if control.is_ready() {
        "portent is ready.\n".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "portent is not ready yet: state is loading or sources are starting.\n",
        )
            .into_response()
    }
}

async fn reload(State(control): State<Control>, headers: HeaderMap) -> Response {
    if let Err(refused) = control.authorize(&headers) {
        return refused.into_response();
    }
    match control.reloader().reload().await {
        Ok(()) => "config reloaded.\n".into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reload failed, the previous config is still in use: {e}\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(e): State<Exposition>) -> Response {
    // Off the async workers: at 100,000 series an encoding takes most of a second of CPU,
    // during which a worker would receive no remote_write.
    let encoded = tokio::task::spawn_blocking(move || {
        // Room for the last scrape's text and an eighth more. Grown by doubling from empty,
        // the 100 MiB of 100,000 series touched two and a half times its size in fresh
        // pages, and the kernel's zeroing of them was over half of a scrape's CPU.
        let hint = e.last_len.load(Ordering::Relaxed);
        let mut text = String::with_capacity(hint + hint / 8);
        let done = prometheus_client::encoding::text::encode(&mut text, &e.registry);
        e.last_len.store(text.len(), Ordering::Relaxed);
        done.map(|()| text)
    })
    .await;
    match encoded {
        Ok(Ok(text)) => ([(CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], text).into_response(),
        // Only a collector can fail, and none of portent's does; say so rather than serve a
        // truncated exposition that Prometheus would half-ingest.
        Ok(Err(_)) | Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding the metrics failed\n",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(constant_time_eq(b"", b""));
    }
}
