//! From [`RawConfig`] to [`Config`]: defaults filled in, references resolved, secrets read,
//! every value checked. The first problem found is reported, with its key path.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

use crate::config::{
    Alias, Auth, AutoModel, ClientCert, Config, Endpoint, JointMethod, JointModel, Model,
    ModelKind, Output, Pull, Push, Query, QuerySource, Retries, Schedule, Server, Source, Storage,
    Tls,
};
use crate::raw::{
    RawAuth, RawConfig, RawModel, RawModelType, RawOutput, RawOutputType, RawPull, RawQuerySource,
    RawRetries, RawSchedule, RawServer, RawSource, RawStorage, RawTls,
};
use crate::units::{RawDuration, format_duration};
use crate::{ConfigError, Secret, defaults, promql};

mod explain;
mod incidents;

type Result<T> = std::result::Result<T, ConfigError>;

/// A fit must see at least this many steps of a query to learn anything.
const MIN_FIT_STEPS: u32 = 10;

/// Headers portent sets itself, or that `auth` sets: a config may not override them.
const RESERVED_HEADERS: [&str; 7] = [
    "authorization",
    "host",
    "content-type",
    "content-length",
    "content-encoding",
    "user-agent",
    "x-prometheus-remote-write-version",
];

/// Validates `raw`. Relative paths resolve against `base`; `*_env` keys read `env`.
pub(crate) fn validate(
    raw: RawConfig,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config> {
    let mut v = Validator {
        base,
        env,
        warnings: Vec::new(),
    };
    let source = v.source(raw.source)?;
    let queries = v.queries(raw.queries, &source)?;
    let schedules = v.schedules(raw.schedules)?;
    let outputs = v.outputs(raw.outputs)?;
    let models = v.models(raw.models, &queries, &schedules, &outputs)?;
    v.unused("queries", "query", &queries, &models, |m| &m.queries);
    v.unused("schedules", "schedule", &schedules, &models, |m| {
        &m.schedules
    });
    v.unused("outputs", "output", &outputs, &models, |m| &m.outputs);
    let server = v.server(raw.server.unwrap_or_default())?;
    let storage = v.storage(raw.storage.unwrap_or_default())?;
    let incidents = v.incidents(raw.incidents.unwrap_or_default())?;
    let explain = v.explain(raw.explain.unwrap_or_default())?;
    Ok(Config {
        source,
        queries,
        models,
        schedules,
        outputs,
        server,
        storage,
        incidents,
        explain,
        warnings: v.warnings,
    })
}

struct Validator<'a> {
    base: &'a Path,
    env: &'a dyn Fn(&str) -> Option<String>,
    warnings: Vec<String>,
}

fn err<T>(key: impl Into<String>, message: impl Into<String>) -> Result<T> {
    Err(ConfigError::at(key, message))
}

/// `cpu, mem`, or `none` for an empty section.
fn list<V>(defined: &BTreeMap<Alias, V>) -> String {
    if defined.is_empty() {
        return "none".to_owned();
    }
    defined
        .keys()
        .map(Alias::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A section whose absence means "use the default" but whose emptiness is a mistake.
fn section<V>(
    key: &str,
    raw: Option<BTreeMap<String, V>>,
    default_hint: &str,
) -> Result<Option<BTreeMap<String, V>>> {
    match raw {
        Some(map) if map.is_empty() => err(
            key,
            format!("empty; define at least one, or remove the key to {default_hint}"),
        ),
        other => Ok(other),
    }
}

fn alias(section: &str, name: &str) -> Result<Alias> {
    Alias::new(name).map_err(|m| ConfigError::at(section, m))
}

fn positive(key: &str, d: Option<RawDuration>, default: Duration) -> Result<Duration> {
    let d = d.map_or(default, |d| d.0);
    if d.is_zero() {
        return err(key, "must be longer than 0");
    }
    Ok(d)
}

fn nonnegative(key: &str, x: Option<f64>, default: f64) -> Result<f64> {
    let x = x.unwrap_or(default);
    if !x.is_finite() || x < 0.0 {
        return err(key, format!("{x} is not a number >= 0"));
    }
    Ok(x)
}

impl Validator<'_> {
    fn resolve(&self, path: &str) -> PathBuf {
        let p = Path::new(path);
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.base.join(p)
        }
    }

    /// A file that must exist when the config is loaded (read later by the client).
    fn existing_file(&self, key: &str, path: &str) -> Result<PathBuf> {
        if path.is_empty() {
            return err(key, "empty path");
        }
        let resolved = self.resolve(path);
        match std::fs::metadata(&resolved) {
            Ok(m) if m.is_file() => Ok(resolved),
            Ok(_) => err(key, format!("{} is not a file", resolved.display())),
            Err(e) => err(key, format!("{}: {e}", resolved.display())),
        }
    }

    /// One secret given inline as `{parent}.{name}`, in a file as `{name}_file` or in an
    /// environment variable named by `{name}_env`; at most one of the three.
    fn secret(
        &self,
        parent: &str,
        name: &str,
        inline: Option<String>,
        file: Option<String>,
        env: Option<String>,
    ) -> Result<Option<Secret>> {
        let key = |suffix: &str| {
            let mut k = String::new();
            if !parent.is_empty() {
                k.push_str(parent);
                k.push('.');
            }
            k.push_str(name);
            k.push_str(suffix);
            k
        };
        let given = [inline.is_some(), file.is_some(), env.is_some()];
        if given.iter().filter(|&&g| g).count() > 1 {
            return err(
                if parent.is_empty() { name } else { parent },
                format!("set only one of {name}, {name}_file and {name}_env"),
            );
        }
        let value = if let Some(v) = inline {
            v
        } else if let Some(path) = file {
            let key = key("_file");
            if path.is_empty() {
                return err(key, "empty path");
            }
            let resolved = self.resolve(&path);
            match std::fs::read_to_string(&resolved) {
                Ok(text) => {
                    // Files written by `echo` or mounted from Kubernetes secrets often end
                    // with a newline that is not part of the secret.
                    let text = text.trim();
                    if text.is_empty() {
                        return err(key, format!("{} is empty", resolved.display()));
                    }
                    text.to_owned()
                }
                Err(e) => return err(key, format!("{}: {e}", resolved.display())),
            }
        } else if let Some(var) = env {
            let key = key("_env");
            if var.is_empty() {
                return err(key, "empty variable name");
            }
            match (self.env)(&var) {
                Some(v) if !v.trim().is_empty() => v.trim().to_owned(),
                Some(_) => return err(key, format!("environment variable {var} is empty")),
                None => return err(key, format!("environment variable {var} is not set")),
            }
        } else {
            return Ok(None);
        };
        if value.is_empty() {
            return err(key(""), "empty");
        }
        Ok(Some(Secret::new(value)))
    }

    fn source(&mut self, raw: Option<RawSource>) -> Result<Source> {
        let missing = "nothing to read from: set source.pull.url to query Prometheus, or \
                       source.push to receive its remote_write";
        let Some(raw) = raw else {
            return err("source", missing);
        };
        let pull = match raw.pull {
            Some(p) => Some(self.pull(p)?),
            None => None,
        };
        let push = match raw.push {
            Some(p) => {
                let (body, per_series, total, lateness) = match p {
                    Some(p) => (
                        p.max_body_size,
                        p.max_samples_per_series,
                        p.max_samples,
                        p.lateness,
                    ),
                    None => (None, None, None, None),
                };
                let max_body_size = body.map_or(defaults::MAX_BODY_SIZE, |s| s.0);
                if max_body_size == 0 {
                    return err("source.push.max_body_size", "must be larger than 0");
                }
                let per_series = per_series.unwrap_or(defaults::PUSH_MAX_SAMPLES_PER_SERIES);
                if per_series < MIN_FIT_STEPS {
                    return err(
                        "source.push.max_samples_per_series",
                        format!(
                            "{per_series} is too few: a fit needs at least {MIN_FIT_STEPS} \
                             samples (the default is {})",
                            defaults::PUSH_MAX_SAMPLES_PER_SERIES
                        ),
                    );
                }
                let total = total.unwrap_or(defaults::PUSH_MAX_SAMPLES);
                if total < u64::from(per_series) {
                    return err(
                        "source.push.max_samples",
                        format!(
                            "{total} is less than max_samples_per_series {per_series}: not \
                             even one series would fit"
                        ),
                    );
                }
                Some(Push {
                    max_body_size,
                    max_samples_per_series: usize::try_from(per_series).unwrap_or(usize::MAX),
                    max_samples: usize::try_from(total).unwrap_or(usize::MAX),
                    lateness: lateness.map_or(defaults::PUSH_LATENESS, |d| d.0),
                })
            }
            None => None,
        };
        if pull.is_none() && push.is_none() {
            return err("source", missing);
        }
        Ok(Source { pull, push })
    }

    fn pull(&mut self, raw: RawPull) -> Result<Pull> {
        let max_points_per_series = raw
            .max_points_per_series
            .unwrap_or(defaults::MAX_POINTS_PER_SERIES);
        if max_points_per_series < 2 {
            return err(
                "source.pull.max_points_per_series",
                "must be at least 2 (Prometheus allows 11000)",
            );
        }
        let endpoint = self.endpoint(
            "source.pull",
            &raw.url,
            raw.auth,
            raw.headers,
            raw.tls,
            raw.timeout,
            raw.retries,
        )?;
        Ok(Pull {
            endpoint,
            max_points_per_series,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn endpoint(
        &mut self,
        key: &str,
        url: &str,
        auth: Option<RawAuth>,
        headers: Option<BTreeMap<String, String>>,
        tls: Option<RawTls>,
        timeout: Option<RawDuration>,
        retries: Option<RawRetries>,
    ) -> Result<Endpoint> {
        let url = parse_url(&format!("{key}.url"), url)?;
        let auth = match auth {
            Some(a) => self.auth(&format!("{key}.auth"), a)?,
            None => None,
        };
        let headers = headers_of(&format!("{key}.headers"), headers.unwrap_or_default())?;
        let tls = match tls {
            Some(t) => self.tls(key, t, &url)?,
            None => Tls::default(),
        };
        let timeout = positive(&format!("{key}.timeout"), timeout, defaults::HTTP_TIMEOUT)?;
        let retries = retries_of(&format!("{key}.retries"), retries)?;
        Ok(Endpoint {
            url,
            auth,
            headers,
            tls,
            timeout,
            retries,
        })
    }

    fn auth(&self, key: &str, raw: RawAuth) -> Result<Option<Auth>> {
        let bearer = self.secret(
            key,
            "bearer_token",
            raw.bearer_token,
            raw.bearer_token_file,
            raw.bearer_token_env,
        )?;
        match (bearer, raw.basic_auth) {
            (Some(_), Some(_)) => err(key, "set either a bearer token or basic_auth, not both"),
            (Some(token), None) => Ok(Some(Auth::Bearer(token))),
            (None, Some(basic)) => {
                let basic_key = format!("{key}.basic_auth");
                if basic.username.is_empty() {
                    return err(format!("{basic_key}.username"), "empty");
                }
                let password = self.secret(
                    &basic_key,
                    "password",
                    basic.password,
                    basic.password_file,
                    basic.password_env,
                )?;
                let Some(password) = password else {
                    return err(
                        basic_key,
                        "no password: set password, password_file or password_env",
                    );
                };
                Ok(Some(Auth::Basic {
                    username: basic.username,
                    password,
                }))
            }
            (None, None) => err(
                key,
                "empty: set bearer_token, bearer_token_file, bearer_token_env or basic_auth, or \
                 remove the key",
            ),
        }
    }

    fn tls(&mut self, parent: &str, raw: RawTls, url: &Url) -> Result<Tls> {
        let key = format!("{parent}.tls");
        if url.scheme() != "https" {
            return err(
                key,
                format!("set, but {parent}.url is not https; use https:// or remove tls"),
            );
        }
        let ca_file = match raw.ca_file {
            Some(p) => Some(self.existing_file(&format!("{key}.ca_file"), &p)?),
            None => None,
        };
        let client_cert = match (raw.cert_file, raw.key_file) {
            (Some(cert), Some(k)) => Some(ClientCert {
                cert_file: self.existing_file(&format!("{key}.cert_file"), &cert)?,
                key_file: self.existing_file(&format!("{key}.key_file"), &k)?,
            }),
            (Some(_), None) => {
                return err(
                    key,
                    "cert_file is set without key_file; a client certificate needs both",
                );
            }
            (None, Some(_)) => {
                return err(
                    key,
                    "key_file is set without cert_file; a client certificate needs both",
                );
            }
            (None, None) => None,
        };
        if raw.server_name.as_deref() == Some("") {
            return err(format!("{key}.server_name"), "empty");
        }
        let insecure_skip_verify = raw
            .insecure_skip_verify
            .unwrap_or(defaults::INSECURE_SKIP_VERIFY);
        if insecure_skip_verify {
            self.warnings.push(format!(
                "{key}.insecure_skip_verify: the server's certificate is not verified"
            ));
        }
        Ok(Tls {
            ca_file,
            client_cert,
            server_name: raw.server_name,
            insecure_skip_verify,
        })
    }

    fn queries(
        &mut self,
        raw: Option<BTreeMap<String, crate::raw::RawQuery>>,
        sources: &Source,
    ) -> Result<BTreeMap<Alias, Query>> {
        let raw = match raw {
            None => return err("queries", "missing; define at least one query"),
            Some(map) if map.is_empty() => {
                return err("queries", "empty; define at least one query");
            }
            Some(map) => map,
        };
        let mut out = BTreeMap::new();
        for (name, q) in raw {
            let alias = alias("queries", &name)?;
            let key = format!("queries.{name}");
            if q.expr.trim().is_empty() {
                return err(format!("{key}.expr"), "empty");
            }
            promql::check(&q.expr).map_err(|e| {
                ConfigError::at(
                    format!("{key}.expr"),
                    e.render(q.expr.trim().contains('\n')),
                )
            })?;
            let step = positive(&format!("{key}.step"), q.step, defaults::QUERY_STEP)?;
            // The only configured source, or pull when both are.
            let source = match q.source {
                Some(RawQuerySource::Pull) => QuerySource::Pull,
                Some(RawQuerySource::Push) => QuerySource::Push,
                None if sources.pull.is_none() => QuerySource::Push,
                None => QuerySource::Pull,
            };
            match source {
                QuerySource::Pull if sources.pull.is_none() => {
                    return err(
                        format!("{key}.source"),
                        "pull, but source.pull is not set; set source.pull.url or use push",
                    );
                }
                QuerySource::Push if sources.push.is_none() => {
                    return err(
                        format!("{key}.source"),
                        "push, but source.push is not set; add `source: {push: }` or use pull",
                    );
                }
                QuerySource::Push => {
                    promql::check_selector(&q.expr)
                        .map_err(|m| ConfigError::at(format!("{key}.expr"), m))?;
                }
                QuerySource::Pull => {}
            }
            out.insert(
                alias,
                Query {
                    expr: q.expr,
                    step,
                    source,
                },
            );
        }
        Ok(out)
    }

    fn schedules(
        &mut self,
        raw: Option<BTreeMap<String, RawSchedule>>,
    ) -> Result<BTreeMap<Alias, Schedule>> {
        let default_hint = format!(
            "use the default schedule (fit_every {}, fit_window {}, score_every {})",
            format_duration(defaults::FIT_EVERY),
            format_duration(defaults::FIT_WINDOW),
            format_duration(defaults::SCORE_EVERY)
        );
        let Some(raw) = section("schedules", raw, &default_hint)? else {
            let s = Schedule {
                fit_every: defaults::FIT_EVERY,
                fit_window: defaults::FIT_WINDOW,
                score_every: defaults::SCORE_EVERY,
            };
            return Ok(BTreeMap::from([(
                alias("schedules", defaults::SCHEDULE_ALIAS)?,
                s,
            )]));
        };
        let mut out = BTreeMap::new();
        for (name, s) in raw {
            let alias = alias("schedules", &name)?;
            let key = format!("schedules.{name}");
            let fit_every = positive(
                &format!("{key}.fit_every"),
                s.fit_every,
                defaults::FIT_EVERY,
            )?;
            let fit_window = positive(
                &format!("{key}.fit_window"),
                s.fit_window,
                defaults::FIT_WINDOW,
            )?;
            let score_every = positive(
                &format!("{key}.score_every"),
                s.score_every,
                defaults::SCORE_EVERY,
            )?;
            if fit_window < score_every {
                return err(
                    format!("{key}.fit_window"),
                    format!(
                        "{} is shorter than score_every {}",
                        format_duration(fit_window),
                        format_duration(score_every)
                    ),
                );
            }
            if fit_every < score_every {
                return err(
                    format!("{key}.fit_every"),
                    format!(
                        "{} is shorter than score_every {}: it would refit more often than it \
                         scores",
                        format_duration(fit_every),
                        format_duration(score_every)
                    ),
                );
            }
            out.insert(
                alias,
                Schedule {
                    fit_every,
                    fit_window,
                    score_every,
                },
            );
        }
        Ok(out)
    }

    fn outputs(
        &mut self,
        raw: Option<BTreeMap<String, RawOutput>>,
    ) -> Result<BTreeMap<Alias, Output>> {
        let Some(raw) = section("outputs", raw, "expose scores on /metrics only")? else {
            return Ok(BTreeMap::from([(
                alias("outputs", defaults::OUTPUT_ALIAS)?,
                Output::Metrics,
            )]));
        };
        let mut out = BTreeMap::new();
        let mut metrics: Option<String> = None;
        for (name, o) in raw {
            let alias = alias("outputs", &name)?;
            let key = format!("outputs.{name}");
            let output = match o.kind {
                RawOutputType::Metrics => {
                    let endpoint_keys = [
                        ("url", o.url.is_some()),
                        ("auth", o.auth.is_some()),
                        ("headers", o.headers.is_some()),
                        ("tls", o.tls.is_some()),
                        ("timeout", o.timeout.is_some()),
                        ("retries", o.retries.is_some()),
                    ];
                    if let Some((k, _)) = endpoint_keys.iter().find(|(_, set)| *set) {
                        return err(
                            format!("{key}.{k}"),
                            "only for type remote_write; a metrics output is served on the \
                             server's /metrics",
                        );
                    }
                    if let Some(first) = &metrics {
                        return err(
                            key,
                            format!(
                                "a second metrics output; outputs.{first} already exposes /metrics"
                            ),
                        );
                    }
                    metrics = Some(name.clone());
                    Output::Metrics
                }
                RawOutputType::RemoteWrite => {
                    let Some(url) = o.url else {
                        return err(format!("{key}.url"), "required for type remote_write");
                    };
                    Output::RemoteWrite(Box::new(
                        self.endpoint(&key, &url, o.auth, o.headers, o.tls, o.timeout, o.retries)?,
                    ))
                }
            };
            out.insert(alias, output);
        }
        Ok(out)
    }

    fn models(
        &mut self,
        raw: Option<BTreeMap<String, RawModel>>,
        queries: &BTreeMap<Alias, Query>,
        schedules: &BTreeMap<Alias, Schedule>,
        outputs: &BTreeMap<Alias, Output>,
    ) -> Result<BTreeMap<Alias, Model>> {
        let raw = section("models", raw, "apply the default auto model to every query")?
            .unwrap_or_else(|| {
                BTreeMap::from([(
                    defaults::MODEL_ALIAS.to_owned(),
                    RawModel {
                        kind: None,
                        direction: None,
                        min_abs_deviation: None,
                        min_rel_deviation: None,
                        threshold: None,
                        queries: None,
                        join_on: None,
                        pool_by: None,
                        schedules: None,
                        outputs: None,
                    },
                )])
            });
        let mut out = BTreeMap::new();
        for (name, m) in raw {
            let alias = alias("models", &name)?;
            let key = format!("models.{name}");
            let threshold = m.threshold.unwrap_or(defaults::THRESHOLD.get());
            let threshold = match portent_core::Score::new(threshold) {
                Ok(t) if threshold > 0.0 => t,
                _ => {
                    return err(
                        format!("{key}.threshold"),
                        format!(
                            "{threshold} is not in (0, 1]: scores run from 0 to 1, and {} is \
                             the default",
                            defaults::THRESHOLD.get()
                        ),
                    );
                }
            };
            let method = match m.kind.unwrap_or(RawModelType::Auto) {
                RawModelType::Auto => None,
                RawModelType::IsolationForest => Some(JointMethod::IsolationForest),
                RawModelType::Autoencoder => Some(JointMethod::Autoencoder),
            };
            let kind = match method {
                Some(method) => ModelKind::Joint(joint_model(&key, method, &m, threshold)?),
                None => {
                    for (name, set) in [
                        ("join_on", m.join_on.is_some()),
                        ("pool_by", m.pool_by.is_some()),
                    ] {
                        if set {
                            return err(
                                format!("{key}.{name}"),
                                "applies to multivariate models only (type isolation_forest or \
                                 autoencoder); remove it, or set the type",
                            );
                        }
                    }
                    ModelKind::Auto(AutoModel {
                        direction: m.direction.unwrap_or(defaults::DIRECTION),
                        min_abs_deviation: nonnegative(
                            &format!("{key}.min_abs_deviation"),
                            m.min_abs_deviation,
                            defaults::MIN_ABS_DEVIATION,
                        )?,
                        min_rel_deviation: nonnegative(
                            &format!("{key}.min_rel_deviation"),
                            m.min_rel_deviation,
                            defaults::MIN_REL_DEVIATION,
                        )?,
                        threshold,
                    })
                }
            };
            let is_joint = matches!(kind, ModelKind::Joint(_));
            if is_joint && m.queries.as_ref().is_none_or(|q| q.len() < 2) {
                return err(
                    format!("{key}.queries"),
                    "a multivariate model scores rows of several queries joined on join_on: \
                     list at least two, in the order of the row's features",
                );
            }
            let model = Model {
                kind,
                queries: references(&key, "queries", "query", m.queries, queries)?,
                schedules: references(&key, "schedules", "schedule", m.schedules, schedules)?,
                outputs: references(&key, "outputs", "output", m.outputs, outputs)?,
            };
            self.check_pairs(&key, &model, queries, schedules)?;
            if is_joint {
                same_step(&key, &model, queries)?;
            }
            out.insert(alias, model);
        }
        Ok(out)
    }

    /// Checks that fits of each query on each schedule of a model can work.
    fn check_pairs(
        &mut self,
        key: &str,
        model: &Model,
        queries: &BTreeMap<Alias, Query>,
        schedules: &BTreeMap<Alias, Schedule>,
    ) -> Result<()> {
        for s_alias in &model.schedules {
            let Some(s) = schedules.get(s_alias) else {
                continue;
            };
            for q_alias in &model.queries {
                let Some(q) = queries.get(q_alias) else {
                    continue;
                };
                if q.step
                    .checked_mul(MIN_FIT_STEPS)
                    .is_none_or(|needed| s.fit_window < needed)
                {
                    return err(
                        key,
                        format!(
                            "schedule {s_alias} fits on {} of history, fewer than \
                             {MIN_FIT_STEPS} steps of query {q_alias} (step {})",
                            format_duration(s.fit_window),
                            format_duration(q.step)
                        ),
                    );
                }
                if s.score_every < q.step {
                    self.warnings.push(format!(
                        "{key}: schedule {s_alias} scores every {} but query {q_alias} has a \
                         step of {}; some runs will find no new sample",
                        format_duration(s.score_every),
                        format_duration(q.step)
                    ));
                }
            }
        }
        Ok(())
    }

    /// Warns about entries of a section that no model uses.
    fn unused<V>(
        &mut self,
        section: &str,
        what: &str,
        defined: &BTreeMap<Alias, V>,
        models: &BTreeMap<Alias, Model>,
        refs: impl Fn(&Model) -> &Vec<Alias>,
    ) {
        let used: BTreeSet<&Alias> = models.values().flat_map(|m| refs(m).iter()).collect();
        for alias in defined.keys().filter(|a| !used.contains(a)) {
            self.warnings
                .push(format!("{section}.{alias}: no model uses this {what}"));
        }
    }

    fn server(&mut self, raw: RawServer) -> Result<Server> {
        let listen = match raw.listen {
            Some(s) => listen_addr("server.listen", &s)?,
            None => defaults::LISTEN,
        };
        let metrics_listen = match raw.metrics_listen {
            Some(s) => Some(listen_addr("server.metrics_listen", &s)?),
            None => None,
        };
        if metrics_listen == Some(listen) {
            return err(
                "server.metrics_listen",
                "same as listen; remove it to serve /metrics on listen",
            );
        }
        let bearer_token = self.secret(
            "server",
            "bearer_token",
            raw.bearer_token,
            raw.bearer_token_file,
            raw.bearer_token_env,
        )?;
        Ok(Server {
            listen,
            metrics_listen,
            bearer_token,
        })
    }

    fn storage(&mut self, raw: RawStorage) -> Result<Storage> {
        let dir = raw.dir.unwrap_or_else(|| defaults::STORAGE_DIR.to_owned());
        if dir.is_empty() {
            return err("storage.dir", "empty path");
        }
        let series_retention = positive(
            "storage.series_retention",
            raw.series_retention,
            defaults::SERIES_RETENTION,
        )?;
        Ok(Storage {
            dir: self.resolve(&dir),
            series_retention,
        })
    }
}

/// Aliases a model refers to in one section: all of them when the key is absent.
/// The options of a multivariate model (`type: isolation_forest` or `autoencoder`).
fn joint_model(
    key: &str,
    method: JointMethod,
    m: &RawModel,
    threshold: portent_core::Score,
) -> Result<JointModel> {
    for (name, set) in [
        ("direction", m.direction.is_some()),
        ("min_abs_deviation", m.min_abs_deviation.is_some()),
        ("min_rel_deviation", m.min_rel_deviation.is_some()),
    ] {
        if set {
            return err(
                format!("{key}.{name}"),
                format!(
                    "applies to type auto only; type {} scores whole rows, not one series",
                    method.as_str()
                ),
            );
        }
    }
    let join_on = label_names(
        &format!("{key}.join_on"),
        m.join_on.clone(),
        &defaults::JOIN_ON,
    )?;
    let pool_by = label_names(&format!("{key}.pool_by"), m.pool_by.clone(), &join_on)?;
    Ok(JointModel {
        method,
        join_on,
        pool_by,
        threshold,
    })
}

/// A list of label names: valid, no repeats, not `__name__`, not empty.
fn label_names<S: AsRef<str>>(
    key: &str,
    raw: Option<Vec<String>>,
    default: &[S],
) -> Result<Vec<String>> {
    let Some(names) = raw else {
        return Ok(default.iter().map(|s| s.as_ref().to_owned()).collect());
    };
    if names.is_empty() {
        return err(key, "empty list; remove the key to use the default");
    }
    for (i, n) in names.iter().enumerate() {
        if n == "__name__" || portent_core::Labels::new([(n.as_str(), "x")]).is_err() {
            return err(
                format!("{key}[{i}]"),
                format!(
                    "{n:?} is not a label name to join on (letters, digits and _, not __name__)"
                ),
            );
        }
        if names[..i].contains(n) {
            return err(format!("{key}[{i}]"), format!("{n:?} is listed twice"));
        }
    }
    Ok(names)
}

/// The queries of a multivariate model form rows, one per step: they must share the step.
fn same_step(key: &str, model: &Model, queries: &BTreeMap<Alias, Query>) -> Result<()> {
    let mut steps = model
        .queries
        .iter()
        .filter_map(|a| Some((a, queries.get(a)?.step)));
    let Some((first, step)) = steps.next() else {
        return Ok(());
    };
    for (other, s) in steps {
        if s != step {
            return err(
                format!("{key}.queries"),
                format!(
                    "query {first} has step {}, query {other} {}: a multivariate model's \
                     queries form one row per step, so they need the same step",
                    format_duration(step),
                    format_duration(s)
                ),
            );
        }
    }
    Ok(())
}

fn references<V>(
    model_key: &str,
    section: &str,
    what: &str,
    raw: Option<Vec<String>>,
    defined: &BTreeMap<Alias, V>,
) -> Result<Vec<Alias>> {
    let key = format!("{model_key}.{section}");
    let Some(names) = raw else {
        return Ok(defined.keys().cloned().collect());
    };
    if names.is_empty() {
        return err(
            key,
            format!("empty list; remove the key to use every {what}"),
        );
    }
    let mut out: Vec<Alias> = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let Some((alias, _)) = defined.get_key_value(name.as_str()) else {
            return err(
                format!("{key}[{i}]"),
                format!("unknown {what} alias {name:?} (defined: {})", list(defined)),
            );
        };
        if out.contains(alias) {
            return err(format!("{key}[{i}]"), format!("{name:?} is listed twice"));
        }
        out.push(alias.clone());
    }
    Ok(out)
}

/// `s` with any user information hidden, fit to appear in an error message.
fn redact_url(s: &str) -> String {
    let Some((scheme, rest)) = s.split_once("://") else {
        return s.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://<redacted>@{}", &rest[at + 1..]),
        None => s.to_owned(),
    }
}

fn parse_url(key: &str, s: &str) -> Result<Url> {
    let shown = redact_url(s);
    let bad = |why: String| err(key, format!("invalid URL {shown:?}: {why}"));
    let url = match Url::parse(s) {
        Ok(u) => u,
        Err(e) => return bad(e.to_string()),
    };
    if !matches!(url.scheme(), "http" | "https") {
        let hint = if s.contains("://") {
            String::new()
        } else {
            format!(" (write http://{s})")
        };
        return bad(format!("the scheme must be http or https{hint}"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return bad("no host".to_owned());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return bad("credentials in the URL; put them in auth.basic_auth".to_owned());
    }
    if url.fragment().is_some() {
        return bad("a fragment (#…) means nothing to an API".to_owned());
    }
    Ok(url)
}

fn headers_of(key: &str, raw: BTreeMap<String, String>) -> Result<BTreeMap<String, String>> {
    // RFC 9110 token characters.
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    let mut seen = BTreeSet::new();
    for (name, value) in &raw {
        let k = format!("{key}.{name}");
        if name.is_empty() || !name.bytes().all(tchar) {
            return err(k, "not a valid header name");
        }
        let lower = name.to_ascii_lowercase();
        if lower == "authorization" {
            return err(k, "set by auth; use auth instead of a header");
        }
        if RESERVED_HEADERS.contains(&lower.as_str()) {
            return err(k, "set by portent itself; it cannot be overridden");
        }
        if !seen.insert(lower) {
            return err(k, "set twice (header names ignore case)");
        }
        if !value
            .bytes()
            .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
        {
            return err(k, "the value must be printable ASCII on one line");
        }
    }
    Ok(raw)
}

fn retries_of(key: &str, raw: Option<RawRetries>) -> Result<Retries> {
    let (max, initial, max_backoff) = match raw {
        Some(r) => (r.max, r.initial_backoff, r.max_backoff),
        None => (None, None, None),
    };
    let initial_backoff = positive(
        &format!("{key}.initial_backoff"),
        initial,
        defaults::RETRIES_INITIAL_BACKOFF,
    )?;
    let max_backoff = positive(
        &format!("{key}.max_backoff"),
        max_backoff,
        defaults::RETRIES_MAX_BACKOFF,
    )?;
    if max_backoff < initial_backoff {
        return err(
            format!("{key}.max_backoff"),
            format!(
                "{} is shorter than initial_backoff {}",
                format_duration(max_backoff),
                format_duration(initial_backoff)
            ),
        );
    }
    Ok(Retries {
        max: max.unwrap_or(defaults::RETRIES_MAX),
        initial_backoff,
        max_backoff,
    })
}

/// `IP:port`, or `:port` for every interface (as Prometheus and Go write it).
fn listen_addr(key: &str, s: &str) -> Result<SocketAddr> {
    let full = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_owned()
    };
    full.parse().or_else(|_| {
        err(
            key,
            format!(
                "{s:?} is not an address; write IP:port, e.g. 127.0.0.1:9099, 0.0.0.0:9099 or \
                 [::]:9099"
            ),
        )
    })
}
