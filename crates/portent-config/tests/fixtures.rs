//! Fixture files, Prometheus-style: every `testdata/*.good.yml` loads, every
//! `testdata/*.bad.yml` fails with exactly the message in its sibling `*.bad.yml.err`.
//!
//! Run with `PORTENT_BLESS=1` to (re)write the `.err` files from the current messages, then
//! read the diff: a message is part of the interface.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use portent_config::{Auth, Config, JointMethod, ModelKind, Output, QuerySource, defaults};
use portent_core::Direction;

/// The environment the fixtures see: deterministic, whatever the machine's.
fn env(var: &str) -> Option<String> {
    match var {
        "PORTENT_TEST_API_TOKEN" => Some("api-token-from-env".to_owned()),
        _ => None,
    }
}

/// Fixture paths relative to the crate (cargo runs tests there), so that messages naming
/// files are the same on every machine.
fn fixtures(suffix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir("testdata")
        .unwrap()
        .map(|e| Path::new("testdata").join(e.unwrap().file_name()))
        .filter(|p| p.to_str().unwrap().ends_with(suffix))
        .collect();
    files.sort();
    files
}

fn load(path: &Path) -> Result<Config, portent_config::ConfigError> {
    Config::load_with_env(path, env)
}

#[test]
fn good_fixtures_load() {
    let good = fixtures(".good.yml");
    assert!(good.len() >= 3);
    for path in good {
        if let Err(e) = load(&path) {
            panic!("{e}");
        }
    }
}

#[test]
fn bad_fixtures_fail_with_their_message() {
    let bless = std::env::var_os("PORTENT_BLESS").is_some();
    let bad = fixtures(".bad.yml");
    assert!(bad.len() >= 10, "{} bad fixtures", bad.len());
    let mut failures = Vec::new();
    for path in &bad {
        let got = match load(path) {
            Ok(_) => {
                failures.push(format!("{}: loaded, expected an error", path.display()));
                continue;
            }
            Err(e) => e.to_string(),
        };
        assert!(!got.contains("hunter2"), "a secret in an error: {got}");
        let err_file = PathBuf::from(format!("{}.err", path.display()));
        if bless {
            fs::write(&err_file, format!("{got}\n")).unwrap();
            continue;
        }
        let want = fs::read_to_string(&err_file)
            .unwrap_or_else(|e| panic!("{}: {e} (run with PORTENT_BLESS=1)", err_file.display()));
        if got != want.trim_end_matches('\n') {
            failures.push(format!(
                "{}:\n  want: {}\n  got:  {got}",
                path.display(),
                want.trim_end()
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn every_err_file_has_its_fixture() {
    for err in fixtures(".bad.yml.err") {
        let yml = err.to_str().unwrap().trim_end_matches(".err");
        assert!(Path::new(yml).exists(), "{} has no fixture", err.display());
    }
}

#[test]
fn minimal_config_gets_every_default() {
    let c = load(Path::new("testdata/minimal.good.yml")).unwrap();
    let pull = c.source.pull.as_ref().unwrap();
    assert_eq!(pull.endpoint.url.as_str(), "http://localhost:9090/");
    assert_eq!(pull.endpoint.timeout, defaults::HTTP_TIMEOUT);
    assert_eq!(pull.endpoint.retries.max, defaults::RETRIES_MAX);
    assert!(!pull.endpoint.tls.insecure_skip_verify);
    assert_eq!(pull.max_points_per_series, 11_000);
    assert!(c.source.push.is_none());

    assert_eq!(c.queries["up"].step, defaults::QUERY_STEP);
    let model = &c.models["default"];
    let ModelKind::Auto(auto) = &model.kind else {
        panic!("not auto")
    };
    assert_eq!(auto.direction, Direction::Both);
    assert_eq!(auto.threshold.get(), 0.8);
    assert_eq!(model.queries, [c.queries.keys().next().unwrap().clone()]);
    assert_eq!(model.schedules.len(), 1);
    assert_eq!(
        c.schedules["default"].fit_window,
        Duration::from_secs(28 * 86_400)
    );
    assert_eq!(c.outputs["metrics"], Output::Metrics);
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:9099");
    assert_eq!(c.server.metrics_listen, None);
    assert_eq!(c.server.bearer_token, None);
    assert_eq!(c.storage.dir, Path::new("testdata/data"));
    assert_eq!(c.storage.series_retention, defaults::SERIES_RETENTION);
    assert!(c.incidents.enabled);
    assert_eq!(c.incidents.hold, defaults::INCIDENT_HOLD);
    assert_eq!(c.incidents.labels.pod, "pod");
    assert!(c.incidents.alertmanager.is_empty() && c.incidents.slack.is_empty());
    assert_eq!(c.explain.llm, None);
    assert!(!c.explain.pseudonymize && c.explain.runbooks.is_none());
    assert_eq!(c.explain.actions, portent_config::Actions::default());
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn full_config_keeps_every_value() {
    let c = load(Path::new("testdata/full.good.yml")).unwrap();
    let pull = c.source.pull.as_ref().unwrap();
    let Some(Auth::Bearer(token)) = &pull.endpoint.auth else {
        panic!("{:?}", pull.endpoint.auth)
    };
    assert_eq!(token.expose(), "prom-token", "file secrets are trimmed");
    assert_eq!(pull.endpoint.headers["X-Scope-OrgID"], "team-a");
    let ex = &c.explain;
    assert!(ex.pseudonymize && ex.kubernetes_events);
    assert_eq!(
        ex.runbooks.as_deref(),
        Some(Path::new("testdata/runbooks.yml"))
    );
    let llm = ex.llm.as_ref().unwrap();
    assert_eq!(llm.provider, portent_config::LlmProvider::Anthropic);
    assert_eq!(llm.url.as_str(), "https://api.anthropic.com/");
    assert_eq!(llm.api_key.as_ref().unwrap().expose(), "sk-ant-hunter2");
    assert_eq!((llm.max_tokens, llm.max_tokens_per_incident), (800, 20_000));
    assert_eq!(llm.output_price_per_mtok, 15.0);
    assert_eq!(ex.loki.as_ref().unwrap().tenant.as_deref(), Some("team-a"));
    assert!(!ex.actions.live);
    let hook = &ex.actions.webhooks["rollback"];
    assert_eq!(hook.url.as_str(), "https://deploy.example.com/rollback");
    assert_eq!(
        hook.bearer_token.as_ref().unwrap().expose(),
        "api-token-from-env"
    );
    assert_eq!(
        ex.slack_signing_secret.as_ref().unwrap().expose(),
        "api-token-from-env"
    );
    let inc = &c.incidents;
    assert_eq!(
        (inc.hold, inc.gap, inc.max_open, inc.group_by_namespace),
        (
            Duration::from_secs(60),
            Duration::from_secs(300),
            500,
            false
        )
    );
    assert_eq!(
        (inc.labels.node.as_str(), inc.labels.pod.as_str()),
        ("instance", "pod")
    );
    let am = &inc.alertmanager[0];
    assert_eq!(am.labels["team"], "sre");
    assert!(am.read_silences);
    assert_eq!(am.resend_every, Duration::from_secs(120));
    assert_eq!(am.bearer_token.as_ref().unwrap().expose(), "api-token");
    assert!(inc.slack[0].webhook_url.expose().ends_with("/hunter2"));
    assert_eq!(
        inc.webhook[0].bearer_token.as_ref().unwrap().expose(),
        "api-token-from-env"
    );
    let tls = &pull.endpoint.tls;
    assert_eq!(
        tls.ca_file.as_deref(),
        Some(Path::new("testdata/tls/ca.pem"))
    );
    let client = tls.client_cert.as_ref().unwrap();
    assert_eq!(client.key_file, Path::new("testdata/tls/client-key.pem"));
    assert_eq!(tls.server_name.as_deref(), Some("mimir.internal"));
    assert_eq!(
        pull.endpoint.retries.initial_backoff,
        Duration::from_millis(250)
    );
    assert_eq!(pull.max_points_per_series, 30_000);
    assert_eq!(c.source.push.as_ref().unwrap().max_body_size, 8 << 20);

    assert!(c.queries["latency_p99"].expr.contains("histogram_quantile"));
    assert_eq!(c.queries["cpu"].step, Duration::from_secs(30));

    let spikes = &c.models["spikes"];
    let ModelKind::Auto(auto) = &spikes.kind else {
        panic!("not auto")
    };
    assert_eq!(auto.direction, Direction::Above);
    assert_eq!(auto.min_rel_deviation, 0.1);
    assert_eq!(auto.threshold.get(), 0.9);
    let names = |v: &[portent_config::Alias]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    assert_eq!(names(&spikes.queries), ["latency_p99", "errors"]);
    assert_eq!(names(&spikes.outputs), ["metrics", "vm"]);
    let everything = &c.models["everything"];
    assert_eq!(names(&everything.queries), ["cpu", "errors", "latency_p99"]);
    assert_eq!(names(&everything.schedules), ["daily"]);
    assert_eq!(
        c.queries_of(spikes)
            .map(|(a, _)| a.as_str())
            .collect::<Vec<_>>(),
        ["latency_p99", "errors"]
    );

    let Output::RemoteWrite(vm) = &c.outputs["vm"] else {
        panic!("{:?}", c.outputs["vm"])
    };
    let Some(Auth::Basic { username, password }) = &vm.auth else {
        panic!("{:?}", vm.auth)
    };
    assert_eq!(
        (username.as_str(), password.expose()),
        ("portent", "s3cret")
    );
    assert_eq!(vm.retries.max, 2);
    assert_eq!(vm.timeout, Duration::from_secs(10));

    assert_eq!(c.server.metrics_listen.unwrap().port(), 9100);
    assert_eq!(
        c.server.bearer_token.as_ref().unwrap().expose(),
        "api-token-from-env"
    );
    assert_eq!(c.storage.dir, Path::new("/var/lib/portent"));
    assert_eq!(c.storage.series_retention, Duration::from_secs(12 * 3600));
    // latency_p99 and errors keep the default 1m step but `spikes` scores every 30s.
    assert_eq!(
        c.warnings,
        [
            "models.spikes: schedule hourly scores every 30s but query latency_p99 has a step \
             of 1m; some runs will find no new sample",
            "models.spikes: schedule hourly scores every 30s but query errors has a step of 1m; \
             some runs will find no new sample",
        ]
    );
}

#[test]
fn secrets_never_reach_debug_output() {
    let c = load(Path::new("testdata/full.good.yml")).unwrap();
    let debug = format!("{c:?}");
    for secret in ["prom-token", "s3cret", "api-token-from-env"] {
        assert!(!debug.contains(secret), "{secret} in {debug}");
    }
    assert!(debug.contains("<redacted>"));
}

#[test]
fn push_only_config_has_no_pull_source() {
    let c = load(Path::new("testdata/push-only.good.yml")).unwrap();
    assert!(c.source.pull.is_none());
    let push = c.source.push.unwrap();
    assert_eq!(push.max_body_size, defaults::MAX_BODY_SIZE);
    assert_eq!(push.max_samples_per_series, 4_320);
    assert_eq!(push.max_samples, 16 << 20);
    assert_eq!(push.lateness, defaults::PUSH_LATENESS);
    // The only source is the default.
    assert!(c.queries.values().all(|q| q.source == QuerySource::Push));
}

#[test]
fn with_both_sources_queries_default_to_pull() {
    let c = load(Path::new("testdata/pull-and-push.good.yml")).unwrap();
    assert_eq!(c.queries["cpu"].source, QuerySource::Pull);
    assert_eq!(c.queries["requests"].source, QuerySource::Push);
    let push = c.source.push.unwrap();
    assert_eq!(push.max_samples_per_series, 2_880);
    assert_eq!(push.max_samples, 1_000_000);
    assert_eq!(push.lateness, std::time::Duration::from_secs(30));
}

#[test]
fn a_missing_file_is_named() {
    let e = Config::load("testdata/no-such.yml").unwrap_err();
    assert!(
        e.to_string().starts_with("reading testdata/no-such.yml: "),
        "{e}"
    );
}

#[test]
fn yaml_text_without_a_file_reports_line_and_column() {
    let e = Config::from_yaml_with_env(
        "source: {pull: {url: http://p:9090}}\nqueries: {a: {expr: up, x: 1}}\n",
        Path::new(""),
        env,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "line 2, column 25: queries.a: unknown field `x`, expected one of expr, step, source"
    );
    assert_eq!(e.key(), "queries.a");
    assert_eq!(e.location().map(|l| l.line), Some(2));
}

/// Every key's default appears in the README's reference table, next to the key.
#[test]
fn multivariate_models_join_their_queries_in_order() {
    let c = load(Path::new("testdata/multivariate.good.yml")).unwrap();
    let pods = &c.models["pods"];
    let ModelKind::Joint(j) = &pods.kind else {
        panic!("pods is not multivariate")
    };
    assert_eq!(j.method, JointMethod::IsolationForest);
    assert_eq!(j.join_on, ["namespace", "pod"]);
    assert_eq!(j.pool_by, ["namespace", "workload"]);
    assert_eq!(pods.threshold().get(), 0.9);
    let features: Vec<&str> = pods.queries.iter().map(|a| a.as_str()).collect();
    assert_eq!(features, ["pod_cpu", "pod_memory", "pod_p99", "pod_errors"]);
    let ModelKind::Joint(ae) = &c.models["pods_ae"].kind else {
        panic!("pods_ae is not multivariate")
    };
    assert_eq!(ae.method, JointMethod::Autoencoder);
    // One model per entity unless told to pool.
    assert_eq!(ae.pool_by, ae.join_on);
    assert_eq!(c.models["pods_ae"].threshold(), defaults::THRESHOLD);
    assert!(matches!(c.models["series"].kind, ModelKind::Auto(_)));
}

#[test]
fn readme_quotes_the_defaults() {
    let readme = fs::read_to_string("README.md").unwrap();
    let row = |key: &str| {
        readme
            .lines()
            .find(|l| l.starts_with(&format!("| `{key}`")))
            .unwrap_or_else(|| panic!("README has no row for {key}"))
            .to_owned()
    };
    let fmt = portent_config::format_duration;
    for (key, default) in [
        ("server.listen", defaults::LISTEN.to_string()),
        ("queries.*.step", fmt(defaults::QUERY_STEP)),
        ("models.*.type", defaults::MODEL_TYPE.to_owned()),
        (
            "models.*.join_on",
            format!("[{}]", defaults::JOIN_ON.join(", ")),
        ),
        ("models.*.direction", defaults::DIRECTION.to_string()),
        (
            "models.*.min_abs_deviation",
            defaults::MIN_ABS_DEVIATION.to_string(),
        ),
        (
            "models.*.min_rel_deviation",
            defaults::MIN_REL_DEVIATION.to_string(),
        ),
        ("models.*.threshold", defaults::THRESHOLD.get().to_string()),
        ("schedules.*.fit_every", fmt(defaults::FIT_EVERY)),
        ("schedules.*.fit_window", fmt(defaults::FIT_WINDOW)),
        ("schedules.*.score_every", fmt(defaults::SCORE_EVERY)),
        ("source.pull.timeout", fmt(defaults::HTTP_TIMEOUT)),
        ("source.pull.retries.max", defaults::RETRIES_MAX.to_string()),
        (
            "source.pull.retries.initial_backoff",
            fmt(defaults::RETRIES_INITIAL_BACKOFF),
        ),
        (
            "source.pull.retries.max_backoff",
            fmt(defaults::RETRIES_MAX_BACKOFF),
        ),
        (
            "source.pull.tls.insecure_skip_verify",
            defaults::INSECURE_SKIP_VERIFY.to_string(),
        ),
        (
            "source.pull.max_points_per_series",
            defaults::MAX_POINTS_PER_SERIES.to_string(),
        ),
        ("source.push.max_body_size", "32MiB".to_owned()),
        (
            "source.push.max_samples_per_series",
            defaults::PUSH_MAX_SAMPLES_PER_SERIES.to_string(),
        ),
        ("source.push.lateness", fmt(defaults::PUSH_LATENESS)),
        (
            "source.push.max_samples",
            defaults::PUSH_MAX_SAMPLES.to_string(),
        ),
        ("storage.dir", defaults::STORAGE_DIR.to_owned()),
        ("storage.series_retention", fmt(defaults::SERIES_RETENTION)),
        ("incidents.enabled", defaults::INCIDENTS_ENABLED.to_string()),
        ("incidents.hold", fmt(defaults::INCIDENT_HOLD)),
        ("incidents.gap", fmt(defaults::INCIDENT_GAP)),
        (
            "incidents.resolve_after",
            fmt(defaults::INCIDENT_RESOLVE_AFTER),
        ),
        ("incidents.retention", fmt(defaults::INCIDENT_RETENTION)),
        (
            "incidents.max_open",
            defaults::INCIDENT_MAX_OPEN.to_string(),
        ),
        (
            "incidents.max_series",
            defaults::INCIDENT_MAX_SERIES.to_string(),
        ),
        (
            "incidents.group_by_namespace",
            defaults::INCIDENT_GROUP_BY_NAMESPACE.to_string(),
        ),
        ("incidents.silences_every", fmt(defaults::SILENCES_EVERY)),
        (
            "incidents.notify.alertmanager[].resend_every",
            fmt(defaults::ALERTMANAGER_RESEND_EVERY),
        ),
        ("explain.pseudonymize", defaults::PSEUDONYMIZE.to_string()),
        ("explain.actions.live", defaults::ACTIONS_LIVE.to_string()),
        (
            "explain.kubernetes_events",
            defaults::KUBERNETES_EVENTS.to_string(),
        ),
        (
            "explain.llm.max_tokens",
            defaults::LLM_MAX_TOKENS.to_string(),
        ),
        ("explain.llm.timeout", fmt(defaults::LLM_TIMEOUT)),
        (
            "explain.llm.max_tokens_per_incident",
            defaults::LLM_MAX_TOKENS_PER_INCIDENT.to_string(),
        ),
        (
            "explain.llm.max_cost_per_incident",
            defaults::LLM_MAX_COST_PER_INCIDENT.to_string(),
        ),
    ] {
        let row = row(key);
        assert!(
            row.contains(&format!("`{default}`")),
            "README row for {key} should quote the default `{default}`: {row}"
        );
    }
    assert_eq!(
        defaults::MAX_BODY_SIZE,
        portent_config::parse_size("32MiB").unwrap()
    );
}

/// Truncated and mangled configs get an error, never a panic: the daemon reloads whatever is
/// on disk, half-written files included.
#[test]
fn mangled_configs_never_panic() {
    let text = fs::read_to_string("testdata/full.good.yml").unwrap();
    let base = Path::new("testdata");
    let boundaries: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
    for &cut in &boundaries {
        let _ = Config::from_yaml_with_env(&text[..cut], base, env);
    }
    for &at in &boundaries {
        for replacement in ["", "(", "\"", ":"] {
            let mut mangled = text.clone();
            let end = at + text[at..].chars().next().map_or(0, char::len_utf8);
            mangled.replace_range(at..end, replacement);
            let _ = Config::from_yaml_with_env(&mangled, base, env);
        }
    }
}

#[test]
fn a_huge_step_is_an_error_not_a_panic() {
    let yaml = "source: {pull: {url: 'http://p:9090'}}\n\
                queries: {q: {expr: up, step: 500000000y}}\n";
    let e = Config::from_yaml_with_env(yaml, Path::new(""), env).unwrap_err();
    assert!(
        e.to_string().contains("fewer than 10 steps of query q"),
        "{e}"
    );
}
