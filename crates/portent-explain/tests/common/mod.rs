//! Shared test helpers: an incident's pack, a recording HTTP server on 127.0.0.1, a log
//! capture.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use portent_core::{Labels, Score, Scored, Timestamp};
use portent_incidents::{Anomaly, Correlator, CorrelatorConfig, EvidencePack, PackConfig};

pub const NS: &str = "payments-prod";
pub const POD: &str = "checkout-7d9f8-xk2p";
pub const WORKLOAD: &str = "checkout";
pub const NODE: &str = "ip-10-1-2-3.ec2.internal";
pub const IP: &str = "10.1.2.3";
pub const HOST: &str = "db-primary.corp.example";
/// Every real name the fixture holds, for "never sent" checks.
pub const REAL_NAMES: [&str; 6] = [NS, POD, WORKLOAD, NODE, IP, HOST];

/// 2027-01-15T08:00:00Z plus `min` minutes.
pub fn at(min: i64) -> Timestamp {
    Timestamp::from_secs(1_800_000_000 + 60 * min)
}

/// A firing incident: the node's CPU first, then the pod's memory on that node, and a
/// database host's latency.
pub fn pack() -> EvidencePack {
    let mut c = Correlator::new(CorrelatorConfig::default());
    let anomaly = |labels: Labels, min: i64, value: f64| Anomaly {
        labels,
        query: "q".into(),
        model: "m".into(),
        scored: Scored {
            t: at(min),
            value,
            score: Score::ONE,
            yhat: 40.0,
            yhat_lower: 35.0,
            yhat_upper: 45.0,
            reason: Some(portent_core::Reason::LevelShift),
        },
    };
    let node = Labels::new([
        ("__name__", "node_cpu_utilisation"),
        ("node", NODE),
        ("instance", "10.1.2.3:9100"),
    ]);
    let pod = Labels::new([
        ("__name__", "container_memory_working_set_bytes"),
        ("namespace", NS),
        ("pod", POD),
        ("node", NODE),
    ]);
    let (Ok(node), Ok(pod)) = (node, pod) else {
        panic!("labels")
    };
    let db = Labels::new([
        ("__name__", "pg_query_latency_seconds"),
        ("namespace", NS),
        ("instance", "db-primary.corp.example:9187"),
    ])
    .unwrap_or_else(|_| panic!("labels"));
    for min in 0..5 {
        c.observe(&anomaly(node.clone(), min, 95.0));
        c.observe(&anomaly(pod.clone(), min + 1, 90.0));
        c.observe(&anomaly(db.clone(), min + 2, 70.0));
    }
    assert_eq!(c.incidents().len(), 1);
    EvidencePack::build(
        &c.incidents()[0],
        &c.config().topology,
        &PackConfig::default(),
    )
}

#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl Recorded {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_default()
    }

    pub fn query_pairs(&self) -> BTreeMap<String, String> {
        form_urlencoded::parse(self.query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }
}

type Respond = dyn Fn(&Recorded, usize) -> (u16, String) + Send + Sync;

pub struct Fake {
    pub url: String,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
}

impl Fake {
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

/// A server on 127.0.0.1 that records every request and answers `respond(request, index)`.
pub async fn serve(
    respond: impl Fn(&Recorded, usize) -> (u16, String) + Send + Sync + 'static,
) -> Fake {
    let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
    let respond: Arc<Respond> = Arc::new(respond);
    let reqs = requests.clone();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let reqs = reqs.clone();
        let respond = respond.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = axum::body::to_bytes(body, 1 << 24)
                .await
                .unwrap_or_default();
            let rec = Recorded {
                method: parts.method.to_string(),
                path: parts.uri.path().to_owned(),
                query: parts.uri.query().unwrap_or_default().to_owned(),
                headers: parts
                    .headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
                    .collect(),
                body: String::from_utf8_lossy(&body).into_owned(),
            };
            let n = {
                let mut r = reqs.lock().unwrap_or_else(|p| p.into_inner());
                r.push(rec.clone());
                r.len() - 1
            };
            let (status, body) = respond(&rec, n);
            axum::response::Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(axum::body::Body::from(body))
                .unwrap_or_default()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("addr: {e}"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Fake {
        url: format!("http://{addr}"),
        requests,
    }
}

/// Collects every tracing event and span field on this thread as text.
#[derive(Clone, Default)]
pub struct LogCapture(pub Arc<Mutex<String>>);

struct Visitor<'a>(&'a mut String);

impl tracing::field::Visit for Visitor<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={:?} ", field.name(), value));
    }
}

impl tracing::Subscriber for LogCapture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        span.record(&mut Visitor(&mut s));
        s.push('\n');
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        values.record(&mut Visitor(&mut s));
        s.push('\n');
    }
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        s.push_str(event.metadata().target());
        s.push(' ');
        event.record(&mut Visitor(&mut s));
        s.push('\n');
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

impl LogCapture {
    pub fn text(&self) -> String {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// An Anthropic Messages API response carrying `text`.
pub fn anthropic_reply(text: &str) -> String {
    serde_json::json!({
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": null,
        "usage": {"input_tokens": 2095, "output_tokens": 503}
    })
    .to_string()
}

/// An OpenAI chat completion carrying `text`.
pub fn openai_reply(text: &str) -> String {
    serde_json::json!({
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "object": "chat.completion",
        "created": 1_741_570_283,
        "model": "gpt-4o-2024-08-06",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": null},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": 1117, "completion_tokens": 46, "total_tokens": 1163}
    })
    .to_string()
}

/// A server on 127.0.0.1 that accepts connections and never answers: for timeouts.
pub async fn silent() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = l.local_addr().unwrap_or_else(|e| panic!("addr: {e}"));
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    format!("http://{addr}")
}
