//! The deployment files against the binary they deploy: the config in the Helm chart's
//! ConfigMap (defaults and every option on) and in deploy/manifests passes `portent check`,
//! and their PrometheusRules are exactly what `portent rules --format kubernetes` writes for
//! that config. The chart templates its rules from `config` (helm cannot run portent), so
//! this is what keeps the template and rules.rs in step.
//!
//! The Kubernetes-type, PromQL and promtool checks of the same files are in
//! crates/portent-deploy-tests (which keeps k8s-openapi out of this crate's build).
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;
use std::process::Command;

use portent_deploy_tests::{Helm, chart_dir, documents, of_kind, portent_config, repo, value_sets};
use serde_json::Value;

/// Variables the configs name with `_env` keys: the chart points `server.bearer_token_env` at
/// PORTENT_API_TOKEN when a token is configured; ci/all-values.yaml reads PROMETHEUS_TOKEN.
const ENV: [(&str, &str); 2] = [
    ("PORTENT_API_TOKEN", "test-token"),
    ("PROMETHEUS_TOKEN", "test-prometheus-token"),
];

/// Runs portent with `args` in `dir`; stdout, or a panic with stderr.
fn portent(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_portent"))
        .args(args)
        .current_dir(dir)
        .envs(ENV)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "portent {}: {}\n{stderr}",
        args.join(" "),
        out.status
    );
    assert!(
        !stderr.contains("warning"),
        "portent {}: {stderr}",
        args.join(" ")
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `portent check` on the config, written to `dir/portent.yml` as the pod mounts it.
fn check(dir: &Path, config: &str, whence: &str) {
    fs::write(dir.join("portent.yml"), config).unwrap();
    let out = portent(dir, &["check", "portent.yml"]);
    assert!(out.starts_with("portent.yml: ok"), "{whence}: {out}");
}

/// The PrometheusRule's groups and those `portent rules` writes for `config` with the
/// chart's window, `for` and severity (`rule_values`, the chart's `prometheusRule`).
fn assert_rules_match(dir: &Path, config: &str, rule: &Value, rule_values: &Value, whence: &str) {
    fs::write(dir.join("portent.yml"), config).unwrap();
    let opt =
        |key: &str, default: &'static str| rule_values[key].as_str().unwrap_or(default).to_owned();
    let generated = portent(
        dir,
        &[
            "rules",
            "portent.yml",
            "--format",
            "kubernetes",
            "--window",
            &opt("window", "15m"),
            "--for",
            &opt("for", "5m"),
            "--severity",
            &opt("severity", "warning"),
        ],
    );
    let generated: Value = serde_saphyr::from_str(&generated).unwrap();
    assert_eq!(generated["kind"], "PrometheusRule");
    assert!(
        rule["spec"] == generated["spec"],
        "{whence}: the PrometheusRule's spec differs from `portent rules`:\n\
         chart:   {}\nportent: {}",
        rule["spec"],
        generated["spec"]
    );
}

fn values_file(path: Option<&Path>) -> Value {
    path.map_or(Value::Null, |p| {
        serde_saphyr::from_str(&fs::read_to_string(p).unwrap()).unwrap()
    })
}

#[test]
fn chart_config_passes_portent_check() {
    let Some(helm) = Helm::find("chart_config_passes_portent_check") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for (name, values) in value_sets() {
        let docs = helm.template(values.as_deref());
        check(dir.path(), &portent_config(&docs), name);
    }
}

#[test]
fn chart_rules_are_what_portent_rules_writes() {
    let Some(helm) = Helm::find("chart_rules_are_what_portent_rules_writes") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut sets = value_sets();
    // The defaults with the PrometheusRule on, as deploy/manifests has it.
    sets.push((
        "manifests",
        Some(chart_dir().join("ci/manifests-values.yaml")),
    ));
    let mut compared = 0;
    for (name, values) in sets {
        let docs = helm.template(values.as_deref());
        let Some(rule) = of_kind(&docs, "PrometheusRule").next() else {
            continue;
        };
        let rule_values = &values_file(values.as_deref())["prometheusRule"];
        assert_rules_match(dir.path(), &portent_config(&docs), rule, rule_values, name);
        compared += 1;
    }
    assert_eq!(
        compared, 2,
        "the all-options and manifests sets have a PrometheusRule"
    );
}

#[test]
fn plain_manifests_config_and_rules() {
    let manifests = repo().join("deploy/manifests");
    let read = |f: &str| documents(&fs::read_to_string(manifests.join(f)).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let config = portent_config(&read("configmap.yaml"));
    check(dir.path(), &config, "deploy/manifests/configmap.yaml");
    let rules = read("prometheusrule.yaml");
    assert_rules_match(
        dir.path(),
        &config,
        &rules[0],
        &Value::Null,
        "deploy/manifests/prometheusrule.yaml",
    );
}
