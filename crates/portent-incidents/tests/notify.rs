//! Notifications against local axum servers that record every request.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use common::{at, run, scenario};
use portent_incidents::notify::{
    AlertmanagerConfig, Explained, Explanations, Notifier, NotifierConfig, Sink, SlackConfig,
    WebhookConfig,
};
use portent_incidents::{CorrelatorConfig, EvidencePack, PackConfig, State};

#[derive(Clone, Debug)]
struct Request {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: serde_json::Value,
    /// Whether it was answered 200.
    ok: bool,
}

#[derive(Clone, Default)]
struct Recorder {
    got: Arc<Mutex<Vec<Request>>>,
    /// Answer 503 to this many requests first.
    fail: Arc<AtomicUsize>,
    /// If set, an xorshift state: each request fails when its next draw is odd.
    flaky: Arc<Mutex<Option<u64>>>,
}

impl Recorder {
    fn requests(&self) -> Vec<Request> {
        self.got.lock().unwrap().clone()
    }
}

async fn serve(fail_first: usize) -> (String, Recorder) {
    let rec = Recorder::default();
    rec.fail.store(fail_first, Ordering::SeqCst);
    let r = rec.clone();
    let app = Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let r = r.clone();
            async move {
                let body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                let left = r.fail.load(Ordering::SeqCst);
                let mut fail = left > 0;
                if fail {
                    r.fail.store(left - 1, Ordering::SeqCst);
                }
                if let Some(x) = r.flaky.lock().unwrap().as_mut() {
                    *x ^= *x << 13;
                    *x ^= *x >> 7;
                    *x ^= *x << 17;
                    fail |= *x & 1 == 1;
                }
                r.got.lock().unwrap().push(Request {
                    method,
                    path: uri.path().to_owned(),
                    headers,
                    body,
                    ok: !fail,
                });
                if fail {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::OK
                }
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), rec)
}

fn packs(c: &portent_incidents::Correlator) -> Vec<EvidencePack> {
    c.incidents()
        .iter()
        .map(|i| EvidencePack::build(i, &c.config().topology, &PackConfig::default()))
        .collect()
}

fn quick() -> NotifierConfig {
    NotifierConfig {
        backoff_base: Duration::from_secs(1),
        backoff_max: Duration::from_secs(8),
        timeout: Duration::from_secs(5),
    }
}

#[tokio::test]
async fn each_sink_gets_its_wire_format() {
    let (am_url, am) = serve(0).await;
    let (slack_url, slack) = serve(0).await;
    let (hook_url, hook) = serve(0).await;
    let mut am_config = AlertmanagerConfig::new(&am_url);
    am_config.runbook_url = Some("https://runbooks.example/portent#{incident}".into());
    am_config.headers = vec![("X-Scope-OrgID".into(), "tenant-1".into())];
    let mut hook_config = WebhookConfig::new(format!("{hook_url}/in/portent"));
    hook_config.bearer = Some("s3cret".into());
    let sinks = vec![
        Sink::Alertmanager(am_config),
        Sink::Slack(SlackConfig {
            url: format!("{slack_url}/services/T0/B0/xyz"),
            chart_base_url: Some("http://portent.example/chart".into()),
        }),
        Sink::Webhook(hook_config),
    ];
    let mut n = Notifier::new(sinks, quick()).unwrap();
    let mut c = run(CorrelatorConfig::default(), &scenario());
    let report = n.tick(&packs(&c), at(12)).await;
    assert_eq!(report.delivered.len(), 6, "{report:?}");
    assert!(report.failed.is_empty());
    let id = c.incidents()[0].id.to_string();

    let got = am.requests();
    assert_eq!(got.len(), 2);
    let r = got
        .iter()
        .find(|r| r.body[0]["labels"]["incident"] == id.as_str())
        .unwrap();
    assert_eq!(r.method, Method::POST);
    assert_eq!(r.path, "/api/v2/alerts");
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(r.headers["x-scope-orgid"], "tenant-1");
    let alert = &r.body[0];
    assert_eq!(alert["labels"]["alertname"], "PortentIncident");
    assert_eq!(alert["labels"]["node"], "n1");
    assert_eq!(alert["labels"]["severity"], "warning");
    assert_eq!(
        alert["annotations"]["runbook_url"],
        format!("https://runbooks.example/portent#{id}")
    );
    assert!(
        alert["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains("most likely cause node_cpu_utilisation{node=\"n1\"}")
    );
    assert!(
        alert["annotations"]["description"]
            .as_str()
            .unwrap()
            .contains("Most likely cause: [e1]")
    );
    assert_eq!(alert["startsAt"], "2027-01-15T08:02:00Z");
    // Firing: endsAt 4 resend intervals ahead.
    assert_eq!(alert["endsAt"], "2027-01-15T08:16:00Z");

    let got = slack.requests();
    let r = got
        .iter()
        .find(|r| r.body["text"].as_str().unwrap().contains(&id))
        .unwrap();
    assert_eq!(r.method, Method::POST);
    assert_eq!(r.path, "/services/T0/B0/xyz");
    let blocks = r.body["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(blocks[0]["text"]["text"], format!("Firing: incident {id}"));
    assert!(
        blocks[2]["text"]["text"]
            .as_str()
            .unwrap()
            .starts_with("*Most likely causes*\n1. [e1] `node_cpu_utilisation{node=\"n1\"}` (node")
    );
    let link = blocks[3]["elements"][0]["url"].as_str().unwrap();
    assert!(
        link.starts_with(
            "http://portent.example/chart?series=node_cpu_utilisation%7Bnode%3D%22n1%22%7D&from="
        ),
        "{link}"
    );

    let got = hook.requests();
    let r = got
        .iter()
        .find(|r| r.body["incident"] == id.as_str())
        .unwrap();
    assert_eq!(r.path, "/in/portent");
    assert_eq!(r.headers["authorization"], "Bearer s3cret");
    assert_eq!(r.body["state"], "firing");
    assert_eq!(r.body["pack"]["incident"]["id"], id.as_str());

    // Nothing changed: nothing sent (the Alertmanager refresh is not due yet).
    let report = n.tick(&packs(&c), at(12)).await;
    assert_eq!(report, Default::default());

    // Resolved: one more each, Alertmanager with endsAt at the resolution.
    c.advance(at(23));
    assert!(c.incidents().iter().all(|i| i.state == State::Resolved));
    let report = n.tick(&packs(&c), at(23)).await;
    assert_eq!(report.delivered.len(), 6, "{report:?}");
    let r = am
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.body[0]["labels"]["incident"] == id.as_str())
        .unwrap();
    // The last anomaly was at minute 12: quiet for `resolve_after` (10 min) at 08:22, which the
    // clock passed by on its way to 08:23.
    assert_eq!(r.body[0]["endsAt"], "2027-01-15T08:22:00Z");
    assert_eq!(n.delivered(0, &id), Some(State::Resolved));
}

#[tokio::test]
async fn explanations_made_elsewhere_are_sent_and_held_changes_wait() {
    let (am_url, am) = serve(0).await;
    let (slack_url, slack) = serve(0).await;
    let (hook_url, hook) = serve(0).await;
    let sinks = vec![
        Sink::Alertmanager(AlertmanagerConfig::new(&am_url)),
        Sink::Slack(SlackConfig {
            url: slack_url,
            chart_base_url: None,
        }),
        Sink::Webhook(WebhookConfig::new(hook_url)),
    ];
    let mut n = Notifier::new(sinks, quick()).unwrap();
    let c = run(CorrelatorConfig::default(), &scenario());
    let p = packs(&c);
    let ids: Vec<String> = p.iter().map(|p| p.incident.id.clone()).collect();

    // Every incident's explanation is on its way: no state change goes out.
    let mut ex = Explanations {
        hold: ids.iter().cloned().collect(),
        ..Explanations::default()
    };
    let report = n.tick_explained(&p, at(12), &ex).await;
    assert_eq!(report, Default::default());

    // The first one's arrives: it goes out with it; the other is still held.
    ex.hold.remove(&ids[0]);
    ex.by_incident.insert(
        ids[0].clone(),
        Explained {
            text: "MODEL: the node ran out of CPU".into(),
            annotations: [
                ("summary".to_owned(), "MODEL-SUMMARY".to_owned()),
                ("likely_cause".to_owned(), "MODEL-CAUSE".to_owned()),
            ]
            .into(),
            detail: Some(serde_json::json!({"source": "llm"})),
        },
    );
    let report = n.tick_explained(&p, at(12), &ex).await;
    assert_eq!(report.delivered.len(), 3, "{report:?}");
    assert!(report.delivered.iter().all(|(_, id, _)| *id == ids[0]));
    let alert = &am.requests()[0].body[0];
    assert_eq!(alert["annotations"]["summary"], "MODEL-SUMMARY");
    assert_eq!(alert["annotations"]["likely_cause"], "MODEL-CAUSE");
    assert_eq!(
        alert["annotations"]["description"],
        "MODEL: the node ran out of CPU"
    );
    let blocks = &slack.requests()[0].body["blocks"];
    assert_eq!(blocks[1]["text"]["text"], "MODEL: the node ran out of CPU");
    let body = &hook.requests()[0].body;
    assert_eq!(body["explanation"], "MODEL: the node ran out of CPU");
    assert_eq!(body["explained"]["source"], "llm");

    // A held incident's refreshes still go: its alert must not expire at Alertmanager.
    ex.hold.insert(ids[0].clone());
    let report = n.tick_explained(&p, at(13), &ex).await;
    assert_eq!(report.refreshed.len(), 1, "{report:?}");
    assert!(report.delivered.is_empty());
}

#[tokio::test]
async fn alertmanager_gets_refreshes_while_firing() {
    let (url, am) = serve(0).await;
    let mut n = Notifier::new(
        vec![Sink::Alertmanager(AlertmanagerConfig::new(&url))],
        quick(),
    )
    .unwrap();
    let c = run(CorrelatorConfig::default(), &scenario());
    let p = packs(&c);
    assert_eq!(n.tick(&p, at(12)).await.delivered.len(), 2);
    assert!(
        n.tick(&p, at(12).add_millis(59_000))
            .await
            .refreshed
            .is_empty()
    );
    assert_eq!(n.tick(&p, at(13)).await.refreshed.len(), 2);
    assert_eq!(n.counters().delivered, 2);
    assert_eq!(am.requests().len(), 4);
    let last = &am.requests()[3].body[0];
    assert_eq!(last["endsAt"], "2027-01-15T08:17:00Z");
}

#[tokio::test]
async fn failures_are_retried_with_backoff_and_never_duplicated() {
    // The webhook fails 3 times, then accepts.
    let (url, hook) = serve(3).await;
    let mut n = Notifier::new(vec![Sink::Webhook(WebhookConfig::new(&url))], quick()).unwrap();
    let mut c = run(CorrelatorConfig::default(), &scenario());
    // One incident only, to count simply.
    let p: Vec<_> = packs(&c).into_iter().take(1).collect();
    let t = at(12);
    let mut sent = 0;
    let mut tries = Vec::new();
    for s in 0..40 {
        let now = t.add_millis(s * 500);
        let r = n.tick(&p, now).await;
        if !r.failed.is_empty() {
            tries.push(s);
        }
        sent += r.delivered.len();
    }
    assert_eq!(sent, 1);
    // Tries at 0 s, then after 1 s, 2 s, 4 s of backoff: 0, 1, 3, 7 seconds (ticks of 0.5 s).
    assert_eq!(tries, [0, 2, 6], "failed attempts at these ticks");
    let reqs = hook.requests();
    assert_eq!(reqs.len(), 4);
    assert_eq!(
        reqs.iter().filter(|r| r.body["state"] == "firing").count(),
        4
    );
    assert_eq!(n.counters().failed, 3);
    assert_eq!(n.counters().delivered, 1);

    // The incident resolves while the webhook is down: the resolution alone is retried and
    // delivered once.
    hook.fail.store(1, Ordering::SeqCst);
    c.advance(at(30));
    let p: Vec<_> = packs(&c).into_iter().take(1).collect();
    let mut resolved = 0;
    for s in 0..10 {
        resolved += n
            .tick(&p, at(30).add_millis(s * 1000))
            .await
            .delivered
            .len();
    }
    assert_eq!(resolved, 1);
    let states: Vec<_> = hook
        .requests()
        .iter()
        .map(|r| r.body["state"].clone())
        .collect();
    assert_eq!(states.len(), 6);
    assert_eq!(
        states[4..],
        [serde_json::json!("resolved"), serde_json::json!("resolved")]
    );

    // Dropped incidents are forgotten.
    assert!(n.tick(&[], at(31)).await.delivered.is_empty());
    assert_eq!(n.delivered(0, p[0].incident.id.as_str()), None);
}

#[tokio::test]
async fn pending_incidents_are_not_announced_and_bad_headers_are_errors() {
    let (url, hook) = serve(0).await;
    let mut c = portent_incidents::Correlator::new(CorrelatorConfig::default());
    c.observe(&scenario()[0]);
    assert_eq!(c.incidents()[0].state, State::Pending);
    let mut n = Notifier::new(vec![Sink::Webhook(WebhookConfig::new(&url))], quick()).unwrap();
    assert_eq!(n.tick(&packs(&c), at(0)).await, Default::default());
    assert!(hook.requests().is_empty());

    let mut bad = WebhookConfig::new(&url);
    bad.headers = vec![("bad header".into(), "x".into())];
    let c = run(CorrelatorConfig::default(), &scenario());
    let mut n = Notifier::new(vec![Sink::Webhook(bad)], quick()).unwrap();
    let r = n.tick(&packs(&c), at(12)).await;
    assert_eq!(r.failed.len(), 2);
    assert!(r.failed[0].2.contains("header \"bad header\""), "{r:?}");
}

#[tokio::test]
async fn a_flaky_sink_gets_exactly_one_success_per_state_change() {
    for seed in [0x2545_f491_4f6c_dd1d_u64, 7, 0xdead_beef] {
        let (url, hook) = serve(0).await;
        *hook.flaky.lock().unwrap() = Some(seed);
        let mut n = Notifier::new(vec![Sink::Webhook(WebhookConfig::new(&url))], quick()).unwrap();
        let mut c = run(CorrelatorConfig::default(), &scenario());
        for s in 0..60 {
            n.tick(&packs(&c), at(12).add_millis(s * 1000)).await;
        }
        c.advance(at(30));
        for s in 0..60 {
            n.tick(&packs(&c), at(30).add_millis(s * 1000)).await;
        }
        let reqs = hook.requests();
        assert!(
            reqs.iter().any(|r| !r.ok),
            "seed {seed}: the sink never failed"
        );
        for inc in c.incidents() {
            for state in ["firing", "resolved"] {
                let ok = reqs
                    .iter()
                    .filter(|r| {
                        r.ok && r.body["incident"] == inc.id.as_str() && r.body["state"] == state
                    })
                    .count();
                assert_eq!(ok, 1, "seed {seed}: {} {state}", inc.id);
            }
        }
        assert_eq!(n.counters().delivered, 4);
    }
}

#[tokio::test]
async fn errors_do_not_leak_the_slack_webhook_path() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sink = Sink::Slack(SlackConfig {
        url: format!("http://127.0.0.1:{port}/services/T0/B0/secret-token"),
        chart_base_url: None,
    });
    let mut n = Notifier::new(vec![sink], quick()).unwrap();
    let c = run(CorrelatorConfig::default(), &scenario());
    let r = n.tick(&packs(&c), at(12)).await;
    assert_eq!(r.failed.len(), 2);
    for (_, _, e) in &r.failed {
        assert!(e.starts_with("slack:127.0.0.1: "), "{e}");
        assert!(!e.contains("secret-token"), "{e}");
    }
}
