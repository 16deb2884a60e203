//! `portent check CONFIG` end to end: the shipped example passes, every bad fixture of
//! portent-config fails with exactly its message, and nothing secret is printed.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `portent check <config>` in `dir` with a clean view of the test variables.
fn check(dir: &Path, config: &str, env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portent"));
    cmd.args(["check", config])
        .current_dir(dir)
        .env_remove("PORTENT_TEST_API_TOKEN")
        .env_remove("PORTENT_TEST_UNSET_PASSWORD");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn config_crate() -> PathBuf {
    repo().join("crates/portent-config")
}

#[test]
fn kubernetes_example_passes_without_warnings() {
    let run = check(&repo(), "examples/kubernetes.yaml", &[]);
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    assert_eq!(run.stderr, "", "the example should not need warnings");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines[0],
        "examples/kubernetes.yaml: ok (9 queries, 6 models, 1 schedule, 1 output)"
    );
    assert_eq!(
        lines[1],
        "  source    pull from http://prometheus-operated.monitoring.svc:9090/"
    );
    let models: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("  model "))
        .collect();
    assert_eq!(models.len(), 6, "{}", run.stdout);
    assert!(models.contains(
        &"  model     latency: auto (above) on http_p99_latency; schedules default; outputs metrics"
    ));
    assert!(models.contains(
        &"  model     saturation: auto (above) on node_cpu_busy, pod_cpu, pod_memory_working_set; \
          schedules default; outputs metrics"
    ));
    assert!(models.contains(
        &"  model     pod_resources: isolation_forest joined on namespace,pod pooled by \
          namespace,workload on pod_cpu, pod_memory_working_set; schedules default; outputs \
          metrics"
    ));
    // Every query is used by some model (or check would have warned), cAdvisor, node-exporter,
    // kube-state-metrics and HTTP histograms alike.
    for query in [
        "node_cpu_busy",
        "pod_memory_working_set",
        "pod_restarts",
        "http_p99_latency",
        "http_5xx_ratio",
    ] {
        assert!(models.iter().any(|m| m.contains(query)), "{query}");
    }
    assert!(lines.contains(&"  schedule  default: fit every 1d on 4w, score every 1m"));
    assert_eq!(
        lines.last(),
        Some(&"  output    metrics: /metrics on 0.0.0.0:9099")
    );
}

/// The bar: `portent check` rejects every bad fixture with its message.
#[test]
fn every_bad_fixture_fails_with_its_message() {
    let dir = config_crate();
    let mut bad: Vec<String> = fs::read_dir(dir.join("testdata"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".bad.yml"))
        .map(|n| format!("testdata/{n}"))
        .collect();
    bad.sort();
    assert!(bad.len() >= 10);
    for file in &bad {
        let want = fs::read_to_string(dir.join(format!("{file}.err"))).unwrap();
        let run = check(&dir, file, &[]);
        assert_eq!(run.code, Some(1), "{file}: {}", run.stderr);
        assert_eq!(run.stdout, "", "{file}");
        assert_eq!(run.stderr, format!("portent: {want}"), "{file}");
    }
}

#[test]
fn good_fixture_summarises_and_warns_without_leaking_secrets() {
    let run = check(
        &config_crate(),
        "testdata/full.good.yml",
        &[("PORTENT_TEST_API_TOKEN", "api-token-from-env")],
    );
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    let out = format!("{}{}", run.stdout, run.stderr);
    for secret in ["prom-token", "s3cret", "api-token-from-env"] {
        assert!(!out.contains(secret), "{secret} printed:\n{out}");
    }
    assert!(run.stdout.starts_with(
        "testdata/full.good.yml: ok (3 queries, 2 models, 2 schedules, 2 outputs)\n  source    \
         pull from https://mimir.example.com/prometheus\n  source    remote_write receiver on \
         0.0.0.0:9099\n"
    ));
    assert!(
        run.stdout.ends_with(
            "  output    metrics: /metrics on 0.0.0.0:9100\n  output    vm: remote_write to \
         http://victoria-metrics:8428/api/v1/write\n  runbooks  testdata/runbooks.yml: 1 entry\n"
        ),
        "{}",
        run.stdout
    );
    let warnings: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(warnings.len(), 2, "{}", run.stderr);
    assert!(warnings.iter().all(|w| {
        w.starts_with("portent: warning: testdata/full.good.yml: models.spikes: schedule hourly")
    }));
}

#[test]
fn env_secret_missing_from_the_environment_is_an_error() {
    let run = check(&config_crate(), "testdata/full.good.yml", &[]);
    assert_eq!(run.code, Some(1));
    assert_eq!(
        run.stderr,
        "portent: testdata/full.good.yml: server.bearer_token_env: environment variable \
         PORTENT_TEST_API_TOKEN is not set\n"
    );
}

#[test]
fn a_missing_config_file_is_named() {
    let run = check(&config_crate(), "testdata/no-such.yml", &[]);
    assert_eq!(run.code, Some(1));
    assert_eq!(
        run.stderr,
        "portent: reading testdata/no-such.yml: No such file or directory (os error 2)\n"
    );
}

/// serve refuses to start on a runbook catalogue that does not parse; check says so first,
/// naming the file and the entry.
#[test]
fn a_runbook_catalogue_that_does_not_parse_fails_the_check() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("runbooks.yml"),
        "entries:\n  - name: a\n    stepz: [typo]\n",
    )
    .unwrap();
    fs::write(
        dir.path().join("portent.yml"),
        "source:\n  push:\nqueries:\n  q:\n    expr: up\nexplain:\n  runbooks: runbooks.yml\n",
    )
    .unwrap();
    let run = check(dir.path(), "portent.yml", &[]);
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.starts_with("portent: explain.runbooks ") && run.stderr.contains("stepz"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.is_empty(), "{}", run.stdout);
}
