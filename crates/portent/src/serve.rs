//! `portent serve CONFIG`: the daemon, pull mode.
//!
//! ```text
//! portent serve portent.yml
//! ```
//!
//! It loads the config, resumes the model state saved in `storage.dir` (if any), and then,
//! forever: sleeps until the next score or fit tick of any model is due, reads the new
//! samples (or the fit window) from `source.pull` with `query_range`, scores them, and exposes
//! the latest verdicts as `portent_anomaly_score`, `portent_yhat`, `portent_yhat_lower` and
//! `portent_yhat_upper` on `/metrics`, with portent's own `portent_*` self-metrics.
//!
//! * `server.listen` serves `/-/healthy`, `/-/ready` (200 after the first step without a
//!   source error), `POST /-/reload` (needs `server.bearer_token`) and `/metrics` (unless
//!   `server.metrics_listen` is set: then `/metrics` is served there only).
//! * SIGHUP or `POST /-/reload` reloads the config; a config that fails to load or plan is
//!   logged and counted (`portent_config_reloads_total{result="failure"}`) and the running
//!   one stays.
//! * The state is saved every [`SAVE_EVERY`] and on SIGTERM or SIGINT, after which portent
//!   exits 0.
//! * A failed read from Prometheus never stops the daemon: it is logged, counted in
//!   `portent_source_errors_total{source="pull"}`, and retried at the next tick.
//!
//! Only `source.pull` is read for now; `source.push` and `remote_write` outputs are not
//! served yet (a warning says so).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow};
use portent_config::Config;
use portent_core::Timestamp;
use portent_engine::{Plan, Scheduler, StepReport};
use portent_prom::Client;

use crate::pull::{PullSource, pull_client};
use portent_server::{Control, Reloader, ScoreKey, Scores, SelfMetrics};
use prometheus_client::registry::Registry;
use tokio::runtime::Handle;
use tokio::sync::watch;

/// How often the state is saved while running (and once more on shutdown).
pub(crate) const SAVE_EVERY: Duration = Duration::from_secs(300);

/// The longest sleep between two looks at the schedule, so that a reloaded plan whose ticks
/// come earlier is noticed soon.
const MAX_SLEEP: Duration = Duration::from_secs(5);

/// Arguments of `portent serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The config file (YAML).
    pub(crate) config: PathBuf,
}

/// What the loop, the reloader and the signal handlers share.
struct Engine {
    scheduler: Scheduler,
    client: Arc<Client>,
}

fn now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    Timestamp::from_millis(ms)
}

fn load_config(path: &Path) -> Result<(Config, Plan, Client)> {
    let config = Config::load(path).with_context(|| format!("loading {}", path.display()))?;
    let plan = Plan::from_config(&config).context("planning the config")?;
    let client = pull_client(&config)?;
    Ok((config, plan, client))
}

/// Runs `portent serve`.
pub(crate) fn run(args: &Args) -> Result<()> {
    let (config, plan, client) = load_config(&args.config)?;
    for w in &config.warnings {
        eprintln!("portent: warning: {w}");
    }
    if config.source.push.is_some() {
        eprintln!("portent: warning: source.push is not served yet, only source.pull is read");
    }
    let dir = config.storage.dir.clone();
    let scheduler = match portent_engine::load(&dir)
        .with_context(|| format!("loading the state in {}", dir.display()))?
    {
        Some(store) => {
            let n = store.len();
            let (s, dropped) = Scheduler::with_store(plan, store)?;
            eprintln!(
                "portent: loaded the state of {n} series from {} ({dropped} dropped: no longer \
                 in the config)",
                dir.display()
            );
            s
        }
        None => {
            eprintln!(
                "portent: no saved state in {}, starting fresh",
                dir.display()
            );
            Scheduler::new(plan)?
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(serve(args.config.clone(), config, scheduler, client))
}

async fn serve(path: PathBuf, config: Config, scheduler: Scheduler, client: Client) -> Result<()> {
    let mut registry = Registry::default();
    let metrics = SelfMetrics::new(&mut registry);
    metrics.record_initial_load(SystemTime::now());
    let scores = Scores::new();
    scores.register(&mut registry);
    let registry = Arc::new(registry);
    let engine = Arc::new(Mutex::new(Engine {
        scheduler,
        client: Arc::new(client),
    }));
    metrics.set_series_tracked(lock(&engine).scheduler.store().len());

    // The reloader needs the control (for the token) and the control the reloader: fill the
    // control in once built.
    let control_slot: Arc<Mutex<Option<Control>>> = Arc::new(Mutex::new(None));
    let reloader = {
        let engine = Arc::clone(&engine);
        let slot = Arc::clone(&control_slot);
        Reloader::new(metrics.clone(), move || {
            let engine = Arc::clone(&engine);
            let slot = Arc::clone(&slot);
            let path = path.clone();
            async move {
                let result = tokio::task::spawn_blocking(move || reload(&path, &engine)).await;
                let outcome = match result {
                    Ok(Ok(token)) => {
                        if let Some(control) = lock(&slot).as_ref() {
                            control.set_bearer_token(token);
                        }
                        eprintln!("portent: config reloaded");
                        Ok(())
                    }
                    Ok(Err(e)) => Err(format!("{e:#}")),
                    Err(e) => Err(format!("reload panicked: {e}")),
                };
                outcome.map_err(|e| {
                    eprintln!("portent: reload failed, keeping the running config: {e}");
                    e.into()
                })
            }
        })
    };
    let control = Control::new(config.server.bearer_token.clone(), reloader);
    *lock(&control_slot) = Some(control.clone());

    let (stop_tx, stop_rx) = watch::channel(false);
    let split = config.server.metrics_listen.is_some();
    let app = portent_server::router(
        control.clone(),
        (!split).then(|| Arc::clone(&registry)),
        None,
    );
    let mut servers = vec![listen(config.server.listen, app, stop_rx.clone()).await?];
    if let Some(addr) = config.server.metrics_listen {
        let app = portent_server::metrics_router(Arc::clone(&registry));
        servers.push(listen(addr, app, stop_rx.clone()).await?);
    }

    let looping = tokio::spawn(run_loop(
        Arc::clone(&engine),
        control.clone(),
        scores,
        metrics.clone(),
        config.storage.dir.clone(),
        stop_rx.clone(),
    ));

    wait_for_shutdown(&control).await;
    eprintln!("portent: shutting down");
    let _ = stop_tx.send(true);
    match looping.await {
        Ok(()) => {}
        Err(e) => eprintln!("portent: the scoring loop ended abnormally: {e}"),
    }
    for s in servers {
        let _ = s.await;
    }
    let dir = config.storage.dir.clone();
    let engine2 = Arc::clone(&engine);
    let saved = tokio::task::spawn_blocking(move || save(&engine2, &dir, &metrics)).await;
    match saved {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e),
        Err(e) => Err(anyhow!("saving the state: {e}")),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Loads the config again and applies it; returns the new API token.
fn reload(path: &Path, engine: &Mutex<Engine>) -> Result<Option<portent_config::Secret>> {
    let (config, plan, client) = load_config(path)?;
    for w in &config.warnings {
        eprintln!("portent: warning: {w}");
    }
    let mut e = lock(engine);
    let dropped = e
        .scheduler
        .set_plan(plan)
        .context("applying the new plan")?;
    e.client = Arc::new(client);
    if dropped > 0 {
        eprintln!("portent: reload dropped {dropped} series no longer in the config");
    }
    Ok(config.server.bearer_token)
}

/// Saves the state and records its size.
fn save(engine: &Mutex<Engine>, dir: &Path, metrics: &SelfMetrics) -> Result<()> {
    let e = lock(engine);
    let stats = portent_engine::save(e.scheduler.store(), dir)
        .with_context(|| format!("saving the state to {}", dir.display()))?;
    metrics.set_state_size(stats.bytes);
    eprintln!(
        "portent: saved the state of {} series to {} ({} bytes)",
        stats.series,
        stats.path.display(),
        stats.bytes
    );
    Ok(())
}

async fn listen(
    addr: SocketAddr,
    app: axum::Router,
    mut stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    eprintln!("portent: listening on {}", listener.local_addr()?);
    Ok(tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            eprintln!("portent: server on {addr}: {e}");
        }
    }))
}

/// Waits for SIGTERM or SIGINT, reloading on SIGHUP meanwhile.
#[cfg(unix)]
async fn wait_for_shutdown(control: &Control) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        eprintln!("portent: cannot install signal handlers; stop with SIGKILL");
        std::future::pending::<()>().await;
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            _ = hup.recv() => {
                let reloader = control.reloader().clone();
                tokio::spawn(async move {
                    let _ = reloader.reload().await;
                });
            }
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_shutdown(_control: &Control) {
    let _ = tokio::signal::ctrl_c().await;
}

/// Steps the scheduler when due, until told to stop.
async fn run_loop(
    engine: Arc<Mutex<Engine>>,
    control: Control,
    scores: Scores,
    metrics: SelfMetrics,
    dir: PathBuf,
    mut stop: watch::Receiver<bool>,
) {
    let mut last_save = tokio::time::Instant::now();
    loop {
        let due = lock(&engine).scheduler.next_due();
        let wait = match due {
            Some(t) => {
                let ms = t.millis().saturating_sub(now().millis()).max(0);
                Duration::from_millis(u64::try_from(ms).unwrap_or(0)).min(MAX_SLEEP)
            }
            None => MAX_SLEEP,
        };
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(wait) => {}
        }
        if due.is_none_or(|t| now() < t) {
            continue;
        }
        let handle = Handle::current();
        let (eng, sc) = (Arc::clone(&engine), scores.clone());
        let stepped = tokio::task::spawn_blocking(move || {
            let mut e = lock(&eng);
            let mut source = PullSource {
                client: Arc::clone(&e.client),
                handle,
            };
            let report = e.scheduler.step(now(), &mut source);
            publish(e.scheduler.store(), &sc);
            (report, e.scheduler.store().len())
        })
        .await;
        let (report, tracked) = match stepped {
            Ok(x) => x,
            Err(e) => {
                eprintln!("portent: a step panicked: {e}");
                continue;
            }
        };
        account(&report, tracked, &metrics);
        if report.errors.is_empty() && report.score_ticks > 0 && !control.is_ready() {
            control.set_ready(true);
            eprintln!("portent: ready");
        }
        if last_save.elapsed() >= SAVE_EVERY {
            last_save = tokio::time::Instant::now();
            let (eng, dir, m) = (Arc::clone(&engine), dir.clone(), metrics.clone());
            match tokio::task::spawn_blocking(move || save(&eng, &dir, &m)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("portent: {e:#}"),
                Err(e) => eprintln!("portent: saving the state: {e}"),
            }
        }
    }
}

/// Makes `scores` hold exactly the latest verdict of every series in `store`: new verdicts
/// set, series the store forgot (expired, or dropped by a reload) removed.
fn publish(store: &portent_engine::Store, scores: &Scores) {
    let mut keys = HashSet::new();
    let mut names: Vec<(Arc<str>, Arc<str>)> = Vec::new();
    let mut updates = Vec::new();
    for l in store.latest() {
        let (query, model) = match names
            .iter()
            .find(|(q, m)| &**q == l.query && &**m == l.model)
        {
            Some((q, m)) => (Arc::clone(q), Arc::clone(m)),
            None => {
                let pair: (Arc<str>, Arc<str>) = (l.query.into(), l.model.into());
                names.push(pair.clone());
                pair
            }
        };
        let key = ScoreKey::new(query, model, l.labels.clone());
        keys.insert(key.clone());
        updates.push((key, *l.scored));
    }
    scores.update(updates);
    scores.retain(|k, _| keys.contains(k));
}

/// Self-metrics and logs of one step.
fn account(report: &StepReport, tracked: usize, metrics: &SelfMetrics) {
    metrics.set_series_tracked(tracked);
    metrics.add_samples_ingested("pull", u64::try_from(report.samples_scored).unwrap_or(0));
    // The report times all models together.
    if report.score_ticks > 0 {
        metrics.observe_score("all", report.score_time);
    }
    if report.fit_ticks > 0 {
        metrics.observe_fit("all", report.fit_time);
    }
    for e in &report.errors {
        metrics.inc_source_errors("pull");
        eprintln!(
            "portent: {} {} query {:?}: {} (retried at the next tick)",
            e.model,
            e.request.as_str(),
            e.query,
            e.message
        );
    }
}
