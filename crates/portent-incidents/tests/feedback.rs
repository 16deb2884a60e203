//! The feedback store: verdicts, the threshold rule, crash safety, silences.

#![allow(clippy::unwrap_used)]

mod common;

use axum::Router;
use axum::routing::get;
use common::{at, node, pods, run, scenario};
use portent_core::Timestamp;
use portent_incidents::CorrelatorConfig;
use portent_incidents::feedback::{
    FeedbackError, FeedbackStore, SeriesWindow, Source, ThresholdRule, Verdict,
};
use portent_incidents::notify::AlertmanagerConfig;

const DAY: i64 = 24 * 3600 * 1000;

#[test]
fn a_false_positive_excludes_its_windows_and_raises_thresholds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("feedback.json");
    let c = run(CorrelatorConfig::default(), &scenario());
    let inc = &c.incidents()[0];
    let mut store = FeedbackStore::open(&path, ThresholdRule::default()).unwrap();
    let fb = store
        .mark_incident(
            inc,
            Verdict::FalsePositive,
            "alice",
            at(20),
            Some("load test"),
        )
        .unwrap();
    assert_eq!(fb.id, "fb-1");
    assert_eq!(fb.windows.len(), 4);
    assert!(store.is_excluded(&node(), at(5)));
    assert!(!store.is_excluded(&node(), at(13)));
    assert!(store.is_excluded(&pods()[0], at(2)));
    assert!(
        !store.is_excluded(&pods()[0], at(1)),
        "before the pod's onset"
    );

    // The same pattern on the same series is known; a larger one, another series, or a
    // pattern forgotten after 30 days is not.
    let member = inc.members.iter().find(|m| m.labels == node()).unwrap();
    let (q, m) = (&member.query, &member.model);
    let peak = (member.peak.value - member.peak.yhat).abs();
    assert!(store.is_known_pattern(&node(), q, m, peak, at(30)));
    assert!(store.is_known_pattern(&node(), q, m, peak * 1.2, at(30)));
    assert!(!store.is_known_pattern(&node(), q, m, peak * 1.3, at(30)));
    assert!(!store.is_known_pattern(&node(), q, "other", peak, at(30)));
    assert!(!store.is_known_pattern(&common::unrelated(), q, m, 0.1, at(30)));
    assert!(!store.is_known_pattern(&node(), q, m, peak, at(20).add_millis(31 * DAY)));

    // +0.05 per false positive, halving weekly, capped at 0.15.
    let now = at(20);
    assert!((store.threshold_raise(&node(), now) - 0.05).abs() < 1e-12);
    let week = now.add_millis(7 * DAY);
    assert!((store.threshold_raise(&node(), week) - 0.025).abs() < 1e-12);
    for _ in 0..5 {
        store
            .mark_incident(inc, Verdict::FalsePositive, "alice", at(20), None)
            .unwrap();
    }
    assert!((store.threshold_raise(&node(), now) - 0.15).abs() < 1e-12);
    assert_eq!(store.threshold_raise(&common::unrelated(), now), 0.0);

    // Confirmed: kept as an example, no exclusion, no raise.
    let w = SeriesWindow {
        labels: common::unrelated(),
        query: "q".into(),
        model: "m".into(),
        from: at(3),
        to: at(12),
        peak_deviation: None,
    };
    store
        .mark_anomaly(w, Verdict::Confirmed, "bob", at(21), None)
        .unwrap();
    assert_eq!(store.confirmed().count(), 1);
    assert!(!store.is_excluded(&common::unrelated(), at(5)));

    // Survives a restart, entry for entry.
    let again = FeedbackStore::open(&path, ThresholdRule::default()).unwrap();
    assert_eq!(again.entries(), store.entries());
    assert_eq!(again.entries()[0].by, "alice");
    assert_eq!(again.entries()[0].note.as_deref(), Some("load test"));
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("{\n  \"version\": 1,"), "{text}");
}

#[test]
fn a_torn_write_leaves_the_previous_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("feedback.json");
    let c = run(CorrelatorConfig::default(), &scenario());
    let mut store = FeedbackStore::open(&path, ThresholdRule::default()).unwrap();
    store
        .mark_incident(
            &c.incidents()[0],
            Verdict::FalsePositive,
            "alice",
            at(20),
            None,
        )
        .unwrap();
    let before = std::fs::read(&path).unwrap();
    // A crash halfway through the next write: the temporary file holds half a document.
    let tmp = dir.path().join("feedback.json.tmp");
    std::fs::write(&tmp, &before[..before.len() / 2]).unwrap();
    let reopened = FeedbackStore::open(&path, ThresholdRule::default()).unwrap();
    assert_eq!(reopened.entries(), store.entries());
    assert_eq!(std::fs::read(&path).unwrap(), before);
    // The next save replaces the leftover.
    let mut reopened = reopened;
    reopened
        .mark_incident(&c.incidents()[1], Verdict::Confirmed, "bob", at(21), None)
        .unwrap();
    assert!(!tmp.exists());
    assert_eq!(
        FeedbackStore::open(&path, ThresholdRule::default())
            .unwrap()
            .entries()
            .len(),
        2
    );

    // A damaged file is an error, never silently emptied; a newer format is refused.
    std::fs::write(&path, &before[..before.len() / 2]).unwrap();
    let err = FeedbackStore::open(&path, ThresholdRule::default()).unwrap_err();
    assert!(matches!(err, FeedbackError::Corrupt { .. }), "{err}");
    std::fs::write(&path, r#"{"version": 9, "entries": []}"#).unwrap();
    let err = FeedbackStore::open(&path, ThresholdRule::default()).unwrap_err();
    assert!(err.to_string().contains("version 9 is newer"), "{err}");
}

#[test]
fn a_failed_save_does_not_record() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("gone");
    std::fs::create_dir(&sub).unwrap();
    let c = run(CorrelatorConfig::default(), &scenario());
    let mut store = FeedbackStore::open(sub.join("f.json"), ThresholdRule::default()).unwrap();
    std::fs::remove_dir(&sub).unwrap();
    let err = store
        .mark_incident(&c.incidents()[0], Verdict::FalsePositive, "a", at(1), None)
        .unwrap_err();
    assert!(matches!(err, FeedbackError::Io { .. }), "{err}");
    assert!(store.entries().is_empty());
}

#[tokio::test]
async fn alertmanager_silences_become_feedback_once() {
    let c = run(CorrelatorConfig::default(), &scenario());
    let id = c.incidents()[0].id.to_string();
    let silences = serde_json::json!([
        {   // portent's, active, about the incident: taken
            "id": "s-1", "status": {"state": "active"},
            "matchers": [
                {"name": "alertname", "value": "PortentIncident", "isRegex": false, "isEqual": true},
                {"name": "incident", "value": id, "isRegex": false}
            ],
            "createdBy": "carol", "comment": "planned maintenance",
            "startsAt": "2027-01-15T08:20:00.000Z", "endsAt": "2027-01-15T10:00:00Z",
            "updatedAt": "2027-01-15T08:20:00Z"
        },
        {   // expired
            "id": "s-2", "status": {"state": "expired"},
            "matchers": [
                {"name": "alertname", "value": "PortentIncident", "isRegex": false},
                {"name": "incident", "value": id, "isRegex": false}
            ],
            "createdBy": "dave", "comment": "", "startsAt": "2027-01-15T08:00:00Z", "endsAt": "2027-01-15T08:01:00Z"
        },
        {   // someone else's alert
            "id": "s-3", "status": {"state": "active"},
            "matchers": [{"name": "alertname", "value": "HighCPU", "isRegex": false}],
            "createdBy": "erin", "comment": "", "startsAt": "2027-01-15T08:00:00Z", "endsAt": "2027-01-15T09:00:00Z"
        },
        {   // an incident portent no longer knows
            "id": "s-4", "status": {"state": "active"},
            "matchers": [
                {"name": "alertname", "value": "PortentIncident", "isRegex": false},
                {"name": "incident", "value": "inc-0000000000000000", "isRegex": false}
            ],
            "createdBy": "frank", "comment": "", "startsAt": "2027-01-15T08:00:00Z", "endsAt": "2027-01-15T09:00:00Z"
        }
    ]);
    let app = Router::new().route(
        "/api/v2/silences",
        get(move || {
            let s = silences.clone();
            async move { axum::Json(s) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let am = AlertmanagerConfig::new(format!("http://{addr}"));
    let client = reqwest::Client::new();
    let got = am.silences(&client).await.unwrap();
    assert_eq!(got.len(), 4);

    let dir = tempfile::tempdir().unwrap();
    let mut store =
        FeedbackStore::open(dir.path().join("f.json"), ThresholdRule::default()).unwrap();
    let r = store.apply_silences(&got, |id| c.incident(id)).unwrap();
    assert_eq!(
        (r.applied, r.already, r.unknown_incident, r.ignored),
        (1, 0, 1, 2)
    );
    let fb = &store.entries()[0];
    assert_eq!(fb.verdict, Verdict::FalsePositive);
    assert_eq!(fb.by, "carol");
    assert_eq!(fb.note.as_deref(), Some("planned maintenance"));
    assert_eq!(fb.at, Timestamp::from_secs(common::T0 + 20 * 60));
    assert_eq!(fb.source, Source::Silence { id: "s-1".into() });
    assert!(store.is_excluded(&node(), at(3)));
    let r = store.apply_silences(&got, |id| c.incident(id)).unwrap();
    assert_eq!((r.applied, r.already), (0, 1));
    assert_eq!(store.entries().len(), 1);

    // An Alertmanager that answers nonsense is an error, not a panic.
    let bad = AlertmanagerConfig::new("http://127.0.0.1:1");
    assert!(bad.silences(&client).await.is_err());
}
