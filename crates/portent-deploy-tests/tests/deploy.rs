//! The deployment files hold together: the Helm chart lints and renders with its defaults and
//! with every option on; every rendered document and every plain manifest is the Kubernetes
//! object it claims to be (k8s-openapi, field for field); the prometheus-operator objects have
//! what the operator needs; every PromQL expression in the rules and the Grafana dashboard
//! parses; the chart's rules pass `promtool check rules`.
//!
//! What needs the portent binary (`portent check` of the configs, the chart's rules against
//! `portent rules`) is in `crates/portent/tests/deploy.rs`.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;
use std::process::Command;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount};
use portent_deploy_tests::{Helm, documents, object_name, of_kind, repo, value_sets};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Where `a` and `b` first differ, as a JSON path; `None` when equal.
fn first_difference(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| {
                let (va, vb) = (x.get(k), y.get(k));
                match (va, vb) {
                    (Some(va), Some(vb)) => first_difference(va, vb, &format!("{path}.{k}")),
                    (Some(_), None) => Some(format!("{path}.{k}: not a field of the type")),
                    // A nested object that is a resource of its own (a PVC template) gets
                    // its type's header when serialised.
                    (None, Some(_)) if !path.is_empty() && (k == "apiVersion" || k == "kind") => {
                        None
                    }
                    (None, Some(_)) => Some(format!("{path}.{k}: added by the type")),
                    (None, None) => None,
                }
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (va, vb))| first_difference(va, vb, &format!("{path}[{i}]"))),
        (Value::Number(x), Value::Number(y)) if x.as_f64() == y.as_f64() => None,
        _ if a == b => None,
        _ => Some(format!("{path}: {a} became {b}")),
    }
}

/// `doc` deserialises into `T` and serialises back to the same document: no unknown or
/// misplaced field (serde would drop it silently), no value of the wrong type.
fn typed<T: DeserializeOwned + Serialize>(doc: &Value) -> T {
    let name = object_name(doc);
    let object: T = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{name}: not a valid {}: {e}", std::any::type_name::<T>()));
    let back = serde_json::to_value(&object).expect("serialising a k8s-openapi object");
    if let Some(diff) = first_difference(doc, &back, "") {
        panic!("{name}: {diff}");
    }
    object
}

/// Checks one document against its kind's type; the kinds portent's files may contain.
fn check_object(doc: &Value) {
    let name = object_name(doc);
    match doc["kind"].as_str() {
        Some("StatefulSet") => {
            typed::<StatefulSet>(doc);
        }
        Some("Service") => {
            typed::<Service>(doc);
        }
        Some("ConfigMap") => {
            typed::<ConfigMap>(doc);
        }
        Some("Secret") => {
            typed::<Secret>(doc);
        }
        Some("ServiceAccount") => {
            typed::<ServiceAccount>(doc);
        }
        Some("CronJob") => {
            typed::<CronJob>(doc);
        }
        Some("Namespace") => {
            typed::<Namespace>(doc);
        }
        Some("ServiceMonitor") => check_service_monitor(doc),
        Some("PrometheusRule") => {
            prometheus_rule_exprs(doc);
        }
        _ => panic!("{name}: a kind no check knows"),
    }
    assert!(
        doc["metadata"]["name"].is_string(),
        "{name}: metadata.name is required"
    );
}

fn check_crd_header(doc: &Value, kind: &str) {
    let name = object_name(doc);
    assert_eq!(doc["apiVersion"], "monitoring.coreos.com/v1", "{name}");
    assert_eq!(doc["kind"], kind, "{name}");
    assert!(doc["metadata"]["name"].is_string(), "{name}: metadata.name");
}

/// The fields prometheus-operator needs in a ServiceMonitor, and that it selects the main
/// Service (not the headless one, which would double every scrape).
fn check_service_monitor(doc: &Value) {
    check_crd_header(doc, "ServiceMonitor");
    let name = object_name(doc);
    let selector = doc["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap_or_else(|| panic!("{name}: spec.selector.matchLabels"));
    assert_eq!(
        selector.get("app.kubernetes.io/component"),
        Some(&Value::from("server")),
        "{name}: selects the main Service only"
    );
    let endpoints = doc["spec"]["endpoints"]
        .as_array()
        .unwrap_or_else(|| panic!("{name}: spec.endpoints"));
    assert!(!endpoints.is_empty(), "{name}: no endpoints");
    for e in endpoints {
        assert_eq!(e["port"], "http", "{name}: endpoints scrape the named port");
        assert_eq!(e["path"], "/metrics", "{name}");
        assert!(e["interval"].is_string(), "{name}: an interval");
    }
}

/// The fields prometheus-operator needs in a PrometheusRule; its alerts' expressions.
fn prometheus_rule_exprs(doc: &Value) -> Vec<String> {
    check_crd_header(doc, "PrometheusRule");
    let name = object_name(doc);
    let groups = doc["spec"]["groups"]
        .as_array()
        .unwrap_or_else(|| panic!("{name}: spec.groups"));
    assert!(!groups.is_empty(), "{name}: no groups");
    let mut exprs = Vec::new();
    for g in groups {
        assert!(g["name"].is_string(), "{name}: a group without a name");
        let rules = g["rules"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: group {} has no rules", g["name"]));
        for r in rules {
            assert!(r["alert"].is_string(), "{name}: {r}: alert");
            assert!(r["for"].is_string(), "{name}: {r}: for");
            exprs.push(
                r["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{name}: {r}: expr"))
                    .to_owned(),
            );
        }
    }
    exprs
}

fn parse_promql(expr: &str, whence: &str) {
    if let Err(e) = promql_parser::parser::parse(expr) {
        panic!("{whence}: {expr}: {e}");
    }
}

#[test]
fn chart_lints_with_defaults_and_every_option() {
    let Some(helm) = Helm::find("chart_lints_with_defaults_and_every_option") else {
        return;
    };
    let chart = portent_deploy_tests::chart_dir();
    let chart = chart.to_str().expect("a UTF-8 path");
    for (name, values) in value_sets() {
        let mut args = vec!["lint", "--strict", chart];
        let values = values.map(|v| v.to_str().expect("a UTF-8 path").to_owned());
        if let Some(v) = &values {
            args.extend(["-f", v]);
        }
        let out = helm.run(&args);
        assert!(out.contains("0 chart(s) failed"), "{name}: {out}");
    }
}

#[test]
fn chart_renders_kubernetes_objects() {
    let Some(helm) = Helm::find("chart_renders_kubernetes_objects") else {
        return;
    };
    for (name, values) in value_sets() {
        let docs = helm.template(values.as_deref());
        for doc in &docs {
            check_object(doc);
            assert_eq!(
                doc["metadata"]["namespace"],
                "monitoring",
                "{name}: {}: in the release's namespace",
                object_name(doc)
            );
        }
        let kinds: BTreeSet<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
        let mut expected =
            BTreeSet::from(["ConfigMap", "Service", "ServiceAccount", "StatefulSet"]);
        match name {
            "all options" => expected.extend(["CronJob", "PrometheusRule", "ServiceMonitor"]),
            "chart-made secret" => expected.extend(["Secret"]),
            _ => {}
        }
        assert_eq!(kinds, expected, "{name}");
    }
}

/// What an operator relies on in the StatefulSet with the default values.
#[test]
fn statefulset_defaults_are_safe_and_persistent() {
    let Some(helm) = Helm::find("statefulset_defaults_are_safe_and_persistent") else {
        return;
    };
    let docs = helm.template(None);
    let sts: StatefulSet = typed(of_kind(&docs, "StatefulSet").next().expect("a StatefulSet"));
    let spec = sts.spec.expect("spec");
    assert_eq!(spec.replicas, Some(1));
    let claims = spec.volume_claim_templates.expect("a volume per replica");
    assert_eq!(claims[0].metadata.name.as_deref(), Some("state"));
    let pod = spec.template.spec.expect("pod spec");
    let annotations = spec.template.metadata.expect("metadata").annotations;
    assert!(
        annotations
            .expect("annotations")
            .contains_key("checksum/config")
    );
    let psc = pod.security_context.expect("pod securityContext");
    assert_eq!(psc.run_as_non_root, Some(true));
    let c = &pod.containers[0];
    assert_eq!(
        c.args.as_deref(),
        Some(&["serve".to_owned(), "/etc/portent/portent.yml".to_owned()][..])
    );
    let sc = c
        .security_context
        .as_ref()
        .expect("container securityContext");
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    let probe_path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref()
            .and_then(|p| p.http_get.as_ref())
            .and_then(|h| h.path.clone())
    };
    assert_eq!(probe_path(&c.liveness_probe).as_deref(), Some("/-/healthy"));
    assert_eq!(probe_path(&c.readiness_probe).as_deref(), Some("/-/ready"));
    let mounts = c.volume_mounts.as_ref().expect("mounts");
    assert!(
        mounts
            .iter()
            .any(|m| m.name == "state" && m.mount_path == "/var/lib/portent")
    );
    // No Secret by default, so no token: the config must not ask for one.
    assert!(c.env_from.is_none());
    let config = portent_deploy_tests::portent_config(&docs);
    assert!(config.contains("listen: 0.0.0.0:9099"), "{config}");
    assert!(config.contains("dir: /var/lib/portent"), "{config}");
    assert!(!config.contains("bearer_token_env"), "{config}");
}

/// An existing Secret is what the pods take their variables from, and the config then
/// expects the API token from it.
#[test]
fn existing_secret_feeds_the_environment() {
    let Some(helm) = Helm::find("existing_secret_feeds_the_environment") else {
        return;
    };
    let all = value_sets()
        .into_iter()
        .find_map(|(n, v)| (n == "all options").then_some(v).flatten())
        .expect("the all-options values");
    let docs = helm.template(Some(&all));
    let sts: StatefulSet = typed(of_kind(&docs, "StatefulSet").next().expect("a StatefulSet"));
    let pod = sts.spec.expect("spec").template.spec.expect("pod spec");
    let from = pod.containers[0].env_from.as_ref().expect("envFrom");
    assert_eq!(
        from[0].secret_ref.as_ref().map(|s| s.name.as_str()),
        Some("portent-secrets")
    );
    let config = portent_deploy_tests::portent_config(&docs);
    assert!(
        config.contains("bearer_token_env: PORTENT_API_TOKEN"),
        "{config}"
    );
}

/// `checksum/config` changes with the config, so `helm upgrade` rolls the pods.
#[test]
fn config_change_rolls_the_pods() {
    let Some(helm) = Helm::find("config_change_rolls_the_pods") else {
        return;
    };
    let checksum = |docs: &[Value]| {
        of_kind(docs, "StatefulSet").next().expect("a StatefulSet")["spec"]["template"]["metadata"]
            ["annotations"]["checksum/config"]
            .clone()
    };
    let before = checksum(&helm.template(None));
    let dir = tempfile::tempdir().expect("a temp dir");
    let changed = dir.path().join("values.yaml");
    fs::write(
        &changed,
        "config:\n  schedules:\n    default:\n      score_every: 2m\n",
    )
    .expect("writing values");
    let after = checksum(&helm.template(Some(&changed)));
    assert!(before.is_string());
    assert_ne!(before, after);
}

fn manifest_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(repo().join("deploy/manifests"))
        .expect("deploy/manifests")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn plain_manifests_are_kubernetes_objects() {
    let mut kinds = BTreeSet::new();
    for file in manifest_files() {
        let text = fs::read_to_string(&file).expect("reading a manifest");
        for doc in documents(&text) {
            check_object(&doc);
            assert!(
                doc["metadata"].get("namespace").is_none(),
                "{}: {}: no namespace, so that `kubectl apply -n` chooses it",
                file.display(),
                object_name(&doc)
            );
            kinds.insert(doc["kind"].as_str().unwrap_or("?").to_owned());
        }
    }
    for kind in [
        "ConfigMap",
        "Service",
        "ServiceAccount",
        "StatefulSet",
        "ServiceMonitor",
        "PrometheusRule",
        "CronJob",
    ] {
        assert!(kinds.contains(kind), "deploy/manifests has no {kind}");
    }
}

/// Without Helm's own labels and the namespace, as scripts/manifests.sh writes them.
fn without_helm_metadata(mut doc: Value) -> Value {
    if let Some(meta) = doc["metadata"].as_object_mut() {
        meta.remove("namespace");
        if let Some(labels) = meta.get_mut("labels").and_then(Value::as_object_mut) {
            labels.remove("helm.sh/chart");
            labels.remove("app.kubernetes.io/managed-by");
        }
    }
    doc
}

/// deploy/manifests/ is the chart rendered by scripts/manifests.sh: not stale.
#[test]
fn plain_manifests_match_the_chart() {
    let Some(helm) = Helm::find("plain_manifests_match_the_chart") else {
        return;
    };
    let values = portent_deploy_tests::chart_dir().join("ci/manifests-values.yaml");
    let mut chart: Vec<Value> = helm
        .template(Some(&values))
        .into_iter()
        .map(without_helm_metadata)
        .collect();
    let mut plain: Vec<Value> = manifest_files()
        .iter()
        .flat_map(|f| documents(&fs::read_to_string(f).expect("reading a manifest")))
        .collect();
    let key = |d: &Value| object_name(d);
    chart.sort_by_key(key);
    plain.sort_by_key(key);
    assert_eq!(
        chart.iter().map(key).collect::<Vec<_>>(),
        plain.iter().map(key).collect::<Vec<_>>(),
        "deploy/manifests is stale: run `bash scripts/manifests.sh`"
    );
    for (c, p) in chart.iter().zip(&plain) {
        if let Some(diff) = first_difference(c, p, "") {
            panic!(
                "deploy/manifests is stale ({}: {diff}): run `bash scripts/manifests.sh`",
                key(c)
            );
        }
    }
}

/// Every alert expression of the chart (every option on) and of the plain manifests parses.
#[test]
fn rule_promql_parses() {
    let mut docs = Vec::new();
    for file in manifest_files() {
        docs.extend(documents(
            &fs::read_to_string(&file).expect("reading a manifest"),
        ));
    }
    if let Some(helm) = Helm::find("rule_promql_parses (chart)") {
        for (_, values) in value_sets() {
            docs.extend(helm.template(values.as_deref()));
        }
    }
    let mut n = 0;
    for doc in of_kind(&docs, "PrometheusRule") {
        for expr in prometheus_rule_exprs(doc) {
            parse_promql(&expr, &object_name(doc));
            n += 1;
        }
    }
    assert!(n > 0, "no rules found");
}

/// `promtool check rules` on the groups of the chart's PrometheusRule and the manifests'.
#[test]
fn rules_pass_promtool() {
    if Command::new("promtool").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("PORTENT_REQUIRE_SERVERS").is_none(),
            "promtool not found (Debian's `prometheus` package; scripts/test.sh installs it)"
        );
        eprintln!("SKIPPED rules_pass_promtool: promtool not found");
        return;
    }
    let mut rules = Vec::new();
    for file in manifest_files() {
        let text = fs::read_to_string(&file).expect("reading a manifest");
        rules.extend(
            documents(&text)
                .into_iter()
                .filter(|d| d["kind"] == "PrometheusRule")
                .map(|d| (file.display().to_string(), d)),
        );
    }
    if let Some(helm) = Helm::find("rules_pass_promtool (chart)") {
        for (name, values) in value_sets() {
            for d in helm.template(values.as_deref()) {
                if d["kind"] == "PrometheusRule" {
                    rules.push((format!("chart ({name})"), d));
                }
            }
        }
    }
    assert!(!rules.is_empty());
    let dir = tempfile::tempdir().expect("a temp dir");
    for (i, (whence, doc)) in rules.iter().enumerate() {
        let file = dir.path().join(format!("rules-{i}.yml"));
        // A rule file is the PrometheusRule's spec; JSON is YAML.
        fs::write(&file, doc["spec"].to_string()).expect("writing a rule file");
        let out = Command::new("promtool")
            .args(["check", "rules"])
            .arg(&file)
            .output()
            .expect("running promtool");
        assert!(
            out.status.success(),
            "{whence}: promtool check rules:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A dashboard expression with its Grafana variables replaced by values of the right shape:
/// intervals by a duration, the others (used inside label matchers) by a name.
fn substitute_grafana_variables(expr: &str) -> String {
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, len) = if let Some(braced) = after.strip_prefix('{') {
            let end = braced.find('}').expect("a closing } of a ${variable}");
            // `${var:format}`: the name is before the colon.
            (braced[..end].split(':').next().unwrap_or(""), end + 2)
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        assert!(!name.is_empty(), "a lone $ in {expr}");
        out.push_str(if name.starts_with("__") { "5m" } else { "x" });
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

fn dashboard() -> Value {
    let text =
        fs::read_to_string(repo().join("deploy/grafana/portent.json")).expect("the dashboard");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    let mut stack: Vec<&Value> = dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    while let Some(p) = stack.pop() {
        stack.extend(p["panels"].as_array().into_iter().flatten());
        all.push(p);
    }
    all
}

#[test]
fn dashboard_promql_parses() {
    let d = dashboard();
    let mut n = 0;
    for p in panels(&d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("panel {}: a target without expr", p["title"]));
            parse_promql(
                &substitute_grafana_variables(expr),
                &format!("panel {}", p["title"]),
            );
            n += 1;
        }
    }
    for a in d["annotations"]["list"].as_array().into_iter().flatten() {
        if let Some(expr) = a["expr"].as_str() {
            parse_promql(&substitute_grafana_variables(expr), "annotation");
            n += 1;
        }
    }
    assert!(n >= 8, "only {n} expressions");
    // The variables' own queries are Grafana's label_values(), not PromQL, except the
    // metric selector inside them.
    for v in d["templating"]["list"]
        .as_array()
        .expect("templating variables")
    {
        if let Some(q) = v["query"]["query"].as_str().or(v["query"].as_str())
            && let Some((selector, _label)) = q
                .strip_prefix("label_values(")
                .and_then(|s| s.strip_suffix(')'))
                .and_then(|s| s.rsplit_once(','))
        {
            parse_promql(&substitute_grafana_variables(selector), "variable");
        }
    }
}

#[test]
fn dashboard_has_the_panels_an_operator_needs() {
    let d = dashboard();
    assert!(d["uid"].is_string() && d["title"].is_string());
    let vars: BTreeSet<&str> = d["templating"]["list"]
        .as_array()
        .expect("templating variables")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    for v in ["datasource", "query", "model"] {
        assert!(vars.contains(v), "no ${v} variable");
    }
    let exprs: Vec<String> = panels(&d)
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect();
    for needle in [
        "topk(",
        "portent_yhat_lower",
        "portent_yhat_upper",
        "portent_anomaly_score",
        "portent_series_tracked",
        "portent_fit_duration_seconds",
        "portent_score_duration_seconds",
        "portent_source_errors_total",
        "portent_config_reloads_total",
        "portent_state_size_bytes",
        "portent_fits_total",
        "portent_source_gaps_total",
    ] {
        assert!(
            exprs.iter().any(|e| e.contains(needle)),
            "no panel queries {needle}"
        );
    }
    for p in panels(&d) {
        if p["type"] != "row" {
            assert!(p["gridPos"].is_object(), "panel {}: gridPos", p["title"]);
        }
    }
}

#[test]
fn grafana_variables_are_substituted() {
    assert_eq!(
        substitute_grafana_variables(
            r#"rate(x{query=~"$query",model=~"${model:regex}"}[$__rate_interval])"#
        ),
        r#"rate(x{query=~"x",model=~"x"}[5m])"#
    );
}

/// Every value of the chart is in its README's table (maps that are passed through whole,
/// such as `config` or `resources`, as one entry).
#[test]
fn every_chart_value_is_documented() {
    let chart = portent_deploy_tests::chart_dir();
    let values: Value =
        serde_saphyr::from_str(&fs::read_to_string(chart.join("values.yaml")).expect("values"))
            .expect("values.yaml is YAML");
    let readme = fs::read_to_string(chart.join("README.md")).expect("the chart's README");
    let whole = [
        "config",
        "resources",
        "podSecurityContext",
        "securityContext",
        "livenessProbe",
        "readinessProbe",
        "cronjob.resources",
    ];
    let mut stack: Vec<(String, &Value)> = vec![(String::new(), &values)];
    let mut n = 0;
    while let Some((path, v)) = stack.pop() {
        match v {
            Value::Object(map) if !map.is_empty() && !whole.contains(&path.as_str()) => {
                for (k, v) in map {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    stack.push((p, v));
                }
            }
            _ => {
                assert!(
                    readme.contains(&format!("| `{path}` |")),
                    "deploy/helm/portent/README.md does not document `{path}`"
                );
                n += 1;
            }
        }
    }
    assert!(n > 40, "{n} values");
}

/// serde ignores unknown fields; the round trip in `typed` is what catches a misspelt one.
#[test]
#[should_panic(expected = "Service/x: .spec.prots: not a field of the type")]
fn a_misspelt_field_is_caught() {
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"prots": [{"port": 9099}]},
    });
    typed::<Service>(&doc);
}
