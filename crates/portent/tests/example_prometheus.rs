//! `examples/prometheus.yml` is a config Prometheus accepts: `promtool check config` passes on
//! it, with the rule file it loads written by `portent rules` for the shipped example config
//! (its path rewritten into a temporary directory). Skipped, loudly, without promtool.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::require;

const RULES_PATH: &str = "/etc/prometheus/portent.rules.yml";

#[test]
fn example_prometheus_config_passes_promtool() {
    let Some(promtool) = require("promtool") else {
        return;
    };
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let example = std::fs::read_to_string(repo.join("examples/prometheus.yml")).unwrap();
    // What the example promises: honor_labels on the portent job, a keep filter on the
    // remote_write to the receiver, the rules file portent writes.
    assert!(example.contains("honor_labels: true"));
    assert!(example.contains("/api/v1/write"));
    assert!(example.contains("action: keep"));
    assert!(example.contains(RULES_PATH));

    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("portent.rules.yml");
    let out = Command::new(env!("CARGO_BIN_EXE_portent"))
        .args(["rules", "examples/kubernetes.yaml", "-o"])
        .arg(&rules)
        .current_dir(&repo)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "portent rules: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        example.replace(RULES_PATH, rules.to_str().unwrap()),
    )
    .unwrap();

    let check = Command::new(promtool)
        .args(["check", "config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(check.status.success(), "promtool check config:\n{text}");
    assert!(text.contains("SUCCESS"), "{text}");
    // The rule file was checked too, and has the generated alerts.
    assert!(text.contains("rules found"), "{text}");
}
