//! Evidence packs: deterministic, bounded, explained.

#![allow(clippy::unwrap_used)]

mod common;

use common::{anomaly, labels, row, run, scenario};
use portent_core::Reason;
use portent_incidents::{CorrelatorConfig, EvidencePack, PackConfig};

#[test]
fn the_pack_is_deterministic_and_explains_the_scenario() {
    let c = run(CorrelatorConfig::default(), &scenario());
    let topo = &c.config().topology;
    let inc = &c.incidents()[0];
    let a = EvidencePack::build(inc, topo, &PackConfig::default());
    let b = EvidencePack::build(inc, topo, &PackConfig::default());
    assert_eq!(a.to_json(), b.to_json());
    assert!(a.truncation.is_none());
    assert_eq!(a.series.len(), 4);
    assert_eq!(a.series[0].id, "e1");
    assert_eq!(a.series[0].peak.actual, Some(18.0));
    assert_eq!(a.series[0].peak.expected, Some(10.0));
    assert_eq!(a.series[0].peak.deviation, 4.0);
    assert_eq!(a.scope.nodes, ["n1"]);
    assert_eq!(a.scope.workloads, ["api", "cart"]);
    assert_eq!(
        a.incident.origin.get("node").map(String::as_str),
        Some("n1")
    );
    let json: serde_json::Value = serde_json::from_str(&a.to_json()).unwrap();
    assert_eq!(json["kubernetes_events"], serde_json::json!([]));
    assert_eq!(json["logs"], serde_json::json!([]));
    assert_eq!(json["incident"]["state"], "firing");
    assert_eq!(
        json["incident"]["started_at"]["iso"],
        "2027-01-15T08:00:00Z"
    );
    let back: EvidencePack = serde_json::from_str(&a.to_json()).unwrap();
    assert_eq!(back, a);

    let text = a.explain();
    assert_eq!(text, b.explain());
    for needle in [
        "Incident inc-",
        "(firing): 4 series moved together.",
        "What: node_cpu_utilisation{node=\"n1\"} level_shift (node): actual 18 vs expected 10 (band 8–12), 4× the half band.",
        "Where: namespace shop; node n1; workload api, cart.",
        "Since: 2027-01-15T08:00:00Z, firing since 2027-01-15T08:02:00Z",
        "Most likely cause: [e1] node_cpu_utilisation{node=\"n1\"} (node; moved first, upstream of 100% of the others",
        "What else moved: [e2]",
    ] {
        assert!(text.contains(needle), "{needle:?} not in\n{text}");
    }
}

#[test]
fn the_size_bound_is_respected_and_said() {
    let mut anomalies = Vec::new();
    for i in 0..150 {
        let pod = format!("pod-with-a-rather-long-name-{i:04}");
        let l = labels(&[
            ("__name__", "container_memory_working_set_bytes"),
            ("namespace", "shop"),
            ("pod", &pod),
            ("container", "a-container-name-that-takes-space"),
        ]);
        anomalies.push(anomaly(&l, 0, 100.0 + f64::from(i), 0.9, Reason::Spike));
    }
    let c = run(CorrelatorConfig::default(), &anomalies);
    assert_eq!(c.incidents().len(), 1);
    let inc = &c.incidents()[0];
    let config = PackConfig {
        max_bytes: 8 * 1024,
        ..PackConfig::default()
    };
    let pack = EvidencePack::build(inc, &c.config().topology, &config);
    assert!(pack.byte_len() <= 8 * 1024, "{}", pack.byte_len());
    let t = pack.truncation.as_ref().unwrap();
    assert!(t.note.contains("8192 bytes"), "{t:?}");
    assert_eq!(
        pack.series.len() + pack.correlated.len() + t.series_omitted + t.correlated_omitted,
        150
    );
    // The most deviating (last added) series stays, the lowest-ranked went.
    assert!(pack.explain().contains("Evidence truncated"));
    let default = EvidencePack::build(inc, &c.config().topology, &PackConfig::default());
    assert!(default.byte_len() <= 32 * 1024);
    assert_eq!(default.series.len(), 10);
    // Tiny budgets still end, with what fits.
    let tiny = PackConfig {
        max_bytes: 10,
        ..PackConfig::default()
    };
    let p = EvidencePack::build(inc, &c.config().topology, &tiny);
    assert!(p.series.is_empty() && p.candidates.is_empty());
}

#[test]
fn a_multivariate_verdict_is_explained_as_a_combination_not_as_a_value() {
    // A multivariate model's verdict names the pod by its join labels; its value is the
    // model's raw score and it has no band.
    let pod = labels(&[("namespace", "shop"), ("pod", "cart-5c6b7d8f9-2x4zq")]);
    let c = run(
        CorrelatorConfig::default(),
        &[row(&pod, 0, 0.71, 0.92), row(&pod, 1, 0.71, 0.92)],
    );
    let inc = &c.incidents()[0];
    let text = EvidencePack::build(inc, &c.config().topology, &PackConfig::default()).explain();
    assert!(
        text.contains("combination (pod): its metrics are unusual together (model score 0.71)"),
        "{text}"
    );
    assert!(!text.contains("NaN"), "{text}");
}
