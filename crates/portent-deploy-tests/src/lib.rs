//! Helpers for the checks of `deploy/` (the Helm chart, the plain manifests, the Grafana
//! dashboard): finding helm, rendering the chart, reading multi-document YAML.
//!
//! The checks themselves are this crate's tests (`tests/deploy.rs`) and, for what needs the
//! `portent` binary (`portent check` on the chart's config, `portent rules` against the chart's
//! PrometheusRule), `crates/portent/tests/deploy.rs`.
//!
//! helm comes from `scripts/helm.sh`, which `scripts/test.sh` runs and whose path it exports
//! as `PORTENT_HELM`. Without helm the chart checks are skipped with a message on stderr,
//! unless `PORTENT_REQUIRE_SERVERS` is set (as `scripts/test.sh` does), when they fail.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `deploy/helm/portent`.
pub fn chart_dir() -> PathBuf {
    repo().join("deploy/helm/portent")
}

/// The value sets the chart is checked with: its defaults, every option on
/// (`ci/all-values.yaml`: ServiceMonitor, PrometheusRule, CronJob, an existing Secret) and a
/// Secret written by the chart (`ci/secret-values.yaml`). The name, and the values file.
pub fn value_sets() -> Vec<(&'static str, Option<PathBuf>)> {
    let ci = chart_dir().join("ci");
    vec![
        ("defaults", None),
        ("all options", Some(ci.join("all-values.yaml"))),
        ("chart-made secret", Some(ci.join("secret-values.yaml"))),
    ]
}

/// A helm binary with a throwaway HOME (helm writes its cache and config there even offline).
#[derive(Debug)]
pub struct Helm {
    bin: PathBuf,
    home: tempfile::TempDir,
}

impl Helm {
    /// helm from `PORTENT_HELM`, `PORTENT_TOOLS/bin`, `~/.cache/portent/tools/bin` (where
    /// `scripts/helm.sh` puts it) or `PATH`. `None` (after saying so on stderr) when there is
    /// none; a panic instead when `PORTENT_REQUIRE_SERVERS` is set.
    pub fn find(test: &str) -> Option<Self> {
        let candidates = [
            std::env::var_os("PORTENT_HELM").map(PathBuf::from),
            std::env::var_os("PORTENT_TOOLS").map(|t| Path::new(&t).join("bin/helm")),
            std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/portent/tools/bin/helm")),
        ];
        let bin = candidates
            .into_iter()
            .flatten()
            .find(|p| p.is_file())
            .or_else(|| {
                let on_path = Command::new("helm").arg("version").output();
                on_path
                    .is_ok_and(|o| o.status.success())
                    .then(|| PathBuf::from("helm"))
            });
        let Some(bin) = bin else {
            assert!(
                std::env::var_os("PORTENT_REQUIRE_SERVERS").is_none(),
                "{test}: helm not found (PORTENT_HELM, ~/.cache/portent/tools/bin/helm, PATH); \
                 run `bash scripts/helm.sh`"
            );
            eprintln!(
                "SKIPPED {test}: helm not found; `bash scripts/helm.sh` installs it \
                 (set PORTENT_REQUIRE_SERVERS=1 to make this a failure)"
            );
            return None;
        };
        let home = tempfile::tempdir().expect("a temp dir for helm's HOME");
        Some(Self { bin, home })
    }

    /// Runs helm with `args`; its stdout, or a panic with its stderr.
    pub fn run(&self, args: &[&str]) -> String {
        let out = Command::new(&self.bin)
            .args(args)
            .env("HOME", self.home.path())
            .env("HELM_CACHE_HOME", self.home.path().join("cache"))
            .env("HELM_CONFIG_HOME", self.home.path().join("config"))
            .env("HELM_DATA_HOME", self.home.path().join("data"))
            .output()
            .expect("running helm");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "helm {}: {}\n{stdout}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// `helm template portent CHART [-f VALUES]` in namespace `monitoring`: the rendered
    /// documents.
    pub fn template(&self, values: Option<&Path>) -> Vec<Value> {
        let chart = chart_dir();
        let mut args = vec![
            "template",
            "portent",
            chart.to_str().expect("a UTF-8 path"),
            "--namespace",
            "monitoring",
        ];
        if let Some(v) = values {
            args.extend(["-f", v.to_str().expect("a UTF-8 path")]);
        }
        documents(&self.run(&args))
    }
}

/// The documents of a multi-document YAML stream, empty ones dropped.
pub fn documents(yaml: &str) -> Vec<Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(yaml).expect("valid YAML");
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// `kind/name` of a Kubernetes object, for messages.
pub fn object_name(doc: &Value) -> String {
    format!(
        "{}/{}",
        doc["kind"].as_str().unwrap_or("?"),
        doc["metadata"]["name"].as_str().unwrap_or("?")
    )
}

/// The documents of `kind` among `docs`.
pub fn of_kind<'a>(docs: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> {
    docs.iter().filter(move |d| d["kind"] == kind)
}

/// The config file in the ConfigMap among `docs` (its `portent.yml`).
pub fn portent_config(docs: &[Value]) -> String {
    let cm = of_kind(docs, "ConfigMap")
        .next()
        .expect("a ConfigMap among the documents");
    cm["data"]["portent.yml"]
        .as_str()
        .expect("the ConfigMap holds portent.yml")
        .to_owned()
}
