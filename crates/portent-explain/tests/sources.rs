//! Kubernetes events and Loki logs from local servers answering in the real wire formats.

mod common;

use std::time::Duration;

use common::{NODE, NS, POD, pack, serve};
use portent_explain::evidence::{self, EventSource, EventsConfig, LokiConfig, LokiSource};

// One argument per wire field the tests vary: clearer here than a builder.
#[allow(clippy::too_many_arguments)]
fn event(
    name: &str,
    kind: &str,
    obj: &str,
    ns: &str,
    type_: &str,
    reason: &str,
    msg: &str,
    last: &str,
    count: i32,
) -> serde_json::Value {
    serde_json::json!({
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": "0b7c1a52-5d0e-4a7e-9c1b-1f3a2b4c5d6e",
            "resourceVersion": "184467",
            "creationTimestamp": "2027-01-15T07:58:02Z",
            "managedFields": []
        },
        "involvedObject": {
            "kind": kind,
            "namespace": ns,
            "name": obj,
            "uid": "5a1f0d36-9b2e-4e57-8d0c-3b6f7e8a9c10",
            "apiVersion": "v1",
            "resourceVersion": "184321",
            "fieldPath": "spec.containers{app}"
        },
        "reason": reason,
        "message": msg,
        "source": {"component": "kubelet", "host": NODE},
        "firstTimestamp": "2027-01-15T07:58:02Z",
        "lastTimestamp": last,
        "count": count,
        "type": type_,
        "eventTime": null,
        "reportingComponent": "kubelet",
        "reportingInstance": NODE
    })
}

fn event_list(items: &[serde_json::Value]) -> String {
    serde_json::json!({
        "kind": "EventList",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": "184500"},
        "items": items
    })
    .to_string()
}

#[tokio::test]
async fn kubernetes_events_for_the_incidents_objects() {
    let fake = serve(|r, _| {
        let q = r.query_pairs();
        let sel = q.get("fieldSelector").cloned().unwrap_or_default();
        let items = match (r.path.as_str(), sel.as_str()) {
            (p, s) if p == format!("/api/v1/namespaces/{NS}/events") && s == format!("involvedObject.name={POD}") => vec![
                event("a.1", "Pod", POD, NS, "Normal", "Pulled", "Container image \"shop/checkout:1.4.2\" already present on machine", "2027-01-15T08:03:00Z", 3),
                event("a.2", "Pod", POD, NS, "Warning", "BackOff", &format!("Back-off restarting failed container app in pod {POD}_{NS}(5a1f0d36) {}", "x".repeat(500)), "2027-01-15T08:02:00Z", 7),
                // Two days old: outside the lookback.
                event("a.3", "Pod", POD, NS, "Warning", "Failed", "old news", "2027-01-13T08:00:00Z", 1),
            ],
            (p, s) if p == format!("/api/v1/namespaces/{NS}/events") && s == "involvedObject.name=checkout" => vec![
                event("b.1", "Deployment", "checkout", NS, "Normal", "ScalingReplicaSet", "Scaled up replica set checkout-7d9f8 to 3", "2027-01-15T07:59:00Z", 1),
            ],
            ("/api/v1/namespaces/default/events", s) if s == format!("involvedObject.name={NODE},involvedObject.kind=Node") => vec![
                event("c.1", "Node", NODE, "default", "Warning", "SystemOOM", "System OOM encountered, victim process: app, pid: 4242", "2027-01-15T08:01:00Z", 1),
            ],
            _ => vec![],
        };
        (200, event_list(&items))
    })
    .await;
    let config = kube::Config::new(fake.url.parse().unwrap_or_else(|e| panic!("{e}")));
    let client = kube::Client::try_from(config).unwrap_or_else(|e| panic!("{e}"));
    let src = EventSource::new(client, EventsConfig::default());
    let p = pack();
    let events = src.fetch(&p).await.unwrap_or_else(|e| panic!("{e}"));

    let reqs = fake.requests();
    let asked: Vec<(String, String, String)> = reqs
        .iter()
        .map(|r| {
            let q = r.query_pairs();
            (
                r.path.clone(),
                q.get("fieldSelector").cloned().unwrap_or_default(),
                q.get("limit").cloned().unwrap_or_default(),
            )
        })
        .collect();
    let ev = format!("/api/v1/namespaces/{NS}/events");
    assert_eq!(
        asked,
        vec![
            (
                "/api/v1/namespaces/default/events".into(),
                format!("involvedObject.name={NODE},involvedObject.kind=Node"),
                "20".into()
            ),
            (
                ev.clone(),
                "involvedObject.name=checkout".into(),
                "20".into()
            ),
            (ev, format!("involvedObject.name={POD}"), "20".into()),
        ],
        "the node (ranked first), then the pod's workload and the pod"
    );
    let summary: Vec<(&str, &str, &str, i32)> = events
        .iter()
        .map(|e| (e.id.as_str(), e.type_.as_str(), e.reason.as_str(), e.count))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("k1", "Warning", "BackOff", 7),
            ("k2", "Warning", "SystemOOM", 1),
            ("k3", "Normal", "Pulled", 3),
            ("k4", "Normal", "ScalingReplicaSet", 1),
        ],
        "warnings first, newest first, the two-day-old one dropped"
    );
    assert_eq!(events[0].object, format!("Pod/{POD}"));
    assert_eq!(events[0].last_seen.as_deref(), Some("2027-01-15T08:02:00Z"));
    assert!(events[0].message.len() <= 300 && events[0].message.ends_with('…'));
    assert_eq!(events[1].namespace, "default");

    // Attached to the pack, they are in its JSON, its IDs and its deterministic explanation.
    let mut p = p;
    evidence::attach(&mut p, &events, &[]);
    assert!(p.to_json().contains("\"id\":\"k2\""));
    assert!(portent_explain::explain::known_ids(&p).contains("k4"));
    let e = portent_explain::Explainer::new(None, Default::default(), Default::default())
        .explain(&p)
        .await;
    assert!(e.text.contains("* [k1] Warning BackOff"), "{}", e.text);
    assert_eq!(evidence::attached(&p).0, events);
}

#[tokio::test]
async fn kubernetes_events_bounded_by_count_and_time() {
    let fake = serve(|r, _| {
        let sel = r
            .query_pairs()
            .get("fieldSelector")
            .cloned()
            .unwrap_or_default();
        let items: Vec<serde_json::Value> = (0..30)
            .map(|i| {
                event(
                    &format!("e.{i}"),
                    "Pod",
                    &sel,
                    NS,
                    "Warning",
                    &format!("R{i:02}"),
                    "m",
                    "2027-01-15T08:00:00Z",
                    1,
                )
            })
            .collect();
        (200, event_list(&items))
    })
    .await;
    let client = kube::Client::try_from(kube::Config::new(
        fake.url.parse().unwrap_or_else(|e| panic!("{e}")),
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let src = EventSource::new(
        client,
        EventsConfig {
            max_objects: 2,
            max_events: 5,
            ..EventsConfig::default()
        },
    );
    let events = src.fetch(&pack()).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(events.len(), 5);
    assert_eq!(fake.requests().len(), 2);

    // A server that never answers costs the timeout, then an error.
    let silent = common::silent().await;
    let client = kube::Client::try_from(kube::Config::new(
        silent.clone().parse().unwrap_or_else(|e| panic!("{e}")),
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let src = EventSource::new(
        client,
        EventsConfig {
            timeout: Duration::from_millis(200),
            ..EventsConfig::default()
        },
    );
    let err = src
        .fetch(&pack())
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.starts_with("kubernetes events: timed out"), "{err}");
}

fn loki_streams(streams: Vec<(serde_json::Value, Vec<(&str, &str)>)>) -> String {
    serde_json::json!({
        "status": "success",
        "data": {
            "resultType": "streams",
            "result": streams.into_iter().map(|(stream, values)| serde_json::json!({
                "stream": stream,
                "values": values.into_iter().map(|(t, l)| [t, l]).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "stats": {"summary": {"bytesProcessedPerSecond": 1_234_567, "linesProcessedPerSecond": 2345, "totalBytesProcessed": 52_000, "totalLinesProcessed": 400, "execTime": 0.021}}
        }
    })
    .to_string()
}

#[tokio::test]
async fn loki_query_range_lines_for_the_incidents_pods() {
    let fake = serve(|_, _| {
        let labels = serde_json::json!({"namespace": NS, "pod": POD, "container": "app", "stream": "stderr"});
        let other = serde_json::json!({"namespace": NS, "pod": POD, "container": "sidecar", "stream": "stdout"});
        (
            200,
            loki_streams(vec![
                (labels, vec![
                    ("1800000180000000000", "level=error msg=\"payment gateway timeout\" upstream=10.1.2.3:443"),
                    ("1800000060000000000", "level=warn msg=\"retrying\""),
                ]),
                (other, vec![("1800000120000000000", &"E".repeat(1000))]),
            ]),
        )
    })
    .await;
    let mut c = LokiConfig::new(format!("{}/", fake.url));
    c.org_id = Some("tenant-a".into());
    c.bearer = Some(portent_explain::Secret::new("loki-token"));
    c.max_line_bytes = 100;
    let src = LokiSource::new(c).unwrap_or_else(|e| panic!("{e}"));
    let p = pack();
    let lines = src.fetch(&p).await.unwrap_or_else(|e| panic!("{e}"));

    let reqs = fake.requests();
    assert_eq!(reqs.len(), 1, "one query per namespace");
    let r = &reqs[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("GET", "/loki/api/v1/query_range")
    );
    assert_eq!(
        r.headers.get("x-scope-orgid").map(String::as_str),
        Some("tenant-a")
    );
    assert_eq!(
        r.headers.get("authorization").map(String::as_str),
        Some("Bearer loki-token")
    );
    let q = r.query_pairs();
    assert_eq!(
        q.get("query").map(String::as_str),
        Some(
            "{namespace=\"payments-prod\", pod=~\"checkout-7d9f8-xk2p\"} |~ \"(?i)(error|warn|fail|fatal|panic|exception|timeout|refused|oom|killed)\""
        )
    );
    // From ten minutes before the start to a minute after the last anomaly, in nanoseconds.
    assert_eq!(
        q.get("start").map(String::as_str),
        Some("1799999400000000000")
    );
    assert_eq!(
        q.get("end").map(String::as_str),
        Some(
            ((1_800_000_000i128 + 6 * 60 + 60) * 1_000_000_000)
                .to_string()
                .as_str()
        )
    );
    assert_eq!(q.get("limit").map(String::as_str), Some("30"));
    assert_eq!(q.get("direction").map(String::as_str), Some("backward"));

    let got: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| (l.id.as_str(), l.at.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("l1", "2027-01-15T08:01:00Z"),
            ("l2", "2027-01-15T08:02:00Z"),
            ("l3", "2027-01-15T08:03:00Z"),
        ],
        "oldest first"
    );
    assert_eq!(lines[1].line.len(), 100 - 3 + 3);
    assert!(lines[1].line.ends_with('…'));
    assert_eq!(lines[0].pod.as_deref(), Some(POD));

    // Count and byte caps.
    let mut c = LokiConfig::new(fake.url.clone());
    c.max_lines = 2;
    let lines = LokiSource::new(c)
        .unwrap_or_else(|e| panic!("{e}"))
        .fetch(&p)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(lines.len(), 2, "the newest two");
    assert!(lines[1].line.contains("payment gateway timeout"));
    let mut c = LokiConfig::new(fake.url.clone());
    c.max_bytes = 150;
    let lines = LokiSource::new(c)
        .unwrap_or_else(|e| panic!("{e}"))
        .fetch(&p)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(lines.len(), 1);
}

#[tokio::test]
async fn loki_errors_are_reported_not_panicked() {
    let fake = serve(|_, n| match n {
        0 => (500, "too many outstanding requests".into()),
        _ => (
            200,
            r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#.into(),
        ),
    })
    .await;
    let src = LokiSource::new(LokiConfig::new(fake.url.clone())).unwrap_or_else(|e| panic!("{e}"));
    let e1 = src.fetch(&pack()).await.err().map(|e| e.to_string());
    assert_eq!(e1.as_deref(), Some("loki: status 500"));
    let e2 = src
        .fetch(&pack())
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e2.contains("resultType \"matrix\""), "{e2}");
}

#[tokio::test]
async fn enrich_attaches_what_arrived_and_reports_what_failed() {
    let k8s = serve(|r, _| {
        let sel = r
            .query_pairs()
            .get("fieldSelector")
            .cloned()
            .unwrap_or_default();
        let items = if sel == format!("involvedObject.name={POD}") {
            vec![event(
                "a.1",
                "Pod",
                POD,
                NS,
                "Warning",
                "OOMKilled",
                "Container app was OOM-killed",
                "2027-01-15T08:02:00Z",
                2,
            )]
        } else {
            vec![]
        };
        (200, event_list(&items))
    })
    .await;
    let loki = serve(|_, _| (502, "bad gateway".into())).await;
    let client = kube::Client::try_from(kube::Config::new(
        k8s.url.parse().unwrap_or_else(|e| panic!("{e}")),
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let events = EventSource::new(client, EventsConfig::default());
    let logs = LokiSource::new(LokiConfig::new(loki.url.clone())).unwrap_or_else(|e| panic!("{e}"));
    let mut p = pack();
    let errors = evidence::enrich(&mut p, Some(&events), Some(&logs)).await;
    assert_eq!(
        errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
        vec!["loki: status 502"]
    );
    assert_eq!(p.kubernetes_events.len(), 1);
    assert_eq!(p.kubernetes_events[0]["reason"], "OOMKilled");
    assert!(p.logs.is_empty());

    let mut q = pack();
    assert!(evidence::enrich(&mut q, None, None).await.is_empty());
    assert_eq!(q, pack());
}
