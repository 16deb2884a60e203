//! `portent serve CONFIG`: the daemon.
//!
//! ```text
//! portent serve portent.yml
//! ```
//!
//! It loads the config, resumes the model state saved in `storage.dir` (if any), and then,
//! forever: sleeps until the next score or fit tick of any model is due, reads the new
//! samples (or the fit window) of each query from its source, scores them, and exposes the
//! latest verdicts as `portent_anomaly_score`, `portent_yhat`, `portent_yhat_lower` and
//! `portent_yhat_upper` on `/metrics`, with portent's own `portent_*` self-metrics.
//!
//! * **Pull** queries (`queries.*.source: pull`) run as `query_range` on `source.pull`.
//! * **Push** queries (`source: push`, the default when `source.push` is the only source):
//!   with `source.push` set, `server.listen` also serves the remote_write receiver at
//!   `POST /api/v1/write`. What Prometheus pushes goes into a bounded push buffer
//!   ([`portent_engine::push`]: per series at most `source.push.max_samples_per_series`
//!   samples, one per query step, and `source.push.max_samples` in total, older ones packed); a
//!   pushed series belongs to every push query whose selector matches it, and the scheduler
//!   reads the buffer as it reads Prometheus. Stale markers, out-of-order and duplicate
//!   samples, and series no query selects are dropped and counted
//!   (`portent_push_samples_dropped_total{reason}`); a malformed body gets 400, changes
//!   nothing and is counted in `portent_source_errors_total{source="push"}`. Pushed series
//!   that stop arriving leave the buffer after `storage.series_retention`.
//! * **remote_write outputs**: each tick's new verdicts of a model with a `remote_write`
//!   output are sent there, off the scoring path ([`crate::outputs`]).
//! * **Incidents** (`incidents.enabled`, on by default; [`crate::incidents`]): each step's
//!   verdicts at or above their model's threshold are grouped into incidents, served at
//!   `/api/v1/incidents` (OpenAPI at `/api/v1/openapi.json`) and sent to the configured
//!   Alertmanagers, Slack and webhooks. Feedback (`POST /api/v1/incidents/{id}/feedback`,
//!   bearer token) is kept in `storage.dir/feedback.json`.
//! * `server.listen` serves `/-/healthy`, `/-/ready` (200 after the first step without a
//!   source error), `POST /-/reload` (needs `server.bearer_token`) and `/metrics` (unless
//!   `server.metrics_listen` is set: then `/metrics` is served there only).
//! * SIGHUP or `POST /-/reload` reloads the config; a config that fails to load or plan is
//!   logged and counted (`portent_config_reloads_total{result="failure"}`) and the running
//!   one stays. Queries, models and push buffer bounds are reloaded; turning the receiver on
//!   or off, its body limit and the remote_write outputs need a restart (a warning says so).
//! * The state is saved every [`SAVE_EVERY`] and on SIGTERM or SIGINT, after which portent
//!   exits 0. The push buffer is not saved: after a restart, series warm up on what is
//!   pushed from then on.
//! * A failed read from Prometheus never stops the daemon: it is logged, counted in
//!   `portent_source_errors_total{source="pull"}`, and retried at the next tick.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow};
use portent_config::{Config, QuerySource};
use portent_core::{Labels, Scored, Timestamp};
use portent_engine::{Plan, PushBuffer, Scheduler, StepReport};
use portent_prom::Client;

use crate::incidents::{Excluding, Incidents};
use crate::outputs::RemoteWriteOutputs;
use crate::pull::{PullSource, pull_client};
use crate::push::{PushSink, Routed, push_limits, push_queries, receiver};
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
    client: Option<Arc<Client>>,
    /// Aliases of the push queries.
    push_queries: HashSet<String>,
    /// Anomalies grouped into incidents, unless `incidents.enabled` is false.
    incidents: Option<Incidents>,
}

/// The aliases of `config`'s push queries.
fn push_aliases(config: &Config) -> HashSet<String> {
    config
        .queries
        .iter()
        .filter(|(_, q)| q.source == QuerySource::Push)
        .map(|(a, _)| a.to_string())
        .collect()
}

fn wall_now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    Timestamp::from_millis(ms)
}

/// The time the daemon runs on: the wall clock for `portent serve`, a simulated clock running
/// faster than it for `portent demo`. Schedules, incidents' hold and resolve times and the
/// push buffer's expiry all run on it; only the state saving interval and HTTP timeouts stay
/// on the wall clock.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Clock {
    /// The wall clock.
    Wall,
    /// `speed` times the wall clock, reading `sim` at the instant `wall`.
    Accelerated {
        /// The wall-clock instant the simulated clock read `sim`.
        wall: Instant,
        /// The simulated time at `wall`.
        sim: Timestamp,
        /// How many simulated milliseconds pass per wall-clock millisecond.
        speed: f64,
    },
}

impl Clock {
    /// The clock's time now.
    pub(crate) fn now(&self) -> Timestamp {
        match *self {
            Clock::Wall => wall_now(),
            Clock::Accelerated { wall, sim, speed } => {
                let ms = wall.elapsed().as_secs_f64() * 1000.0 * speed;
                sim.add_millis(ms as i64)
            }
        }
    }

    /// How long a wait of `ms` on this clock takes on the wall clock.
    pub(crate) fn wall_wait(&self, ms: i64) -> Duration {
        let ms = u64::try_from(ms.max(0)).unwrap_or(0);
        match *self {
            Clock::Wall => Duration::from_millis(ms),
            Clock::Accelerated { speed, .. } => Duration::from_secs_f64(ms as f64 / 1000.0 / speed),
        }
    }
}

/// What `portent serve` and `portent demo` run differently; everything else is shared.
pub(crate) struct Daemon {
    /// The config file to reload on SIGHUP or `POST /-/reload`; without one (the demo's
    /// built-in config) a reload is refused.
    pub(crate) config_path: Option<PathBuf>,
    /// The time the daemon runs on.
    pub(crate) clock: Clock,
    /// Each step runs this far (clock time) behind the clock, so that samples that arrive a
    /// little after their timestamp are still read: a step reads each series from where the
    /// last one stopped, and a sample older than that is never read.
    pub(crate) lag: Duration,
    /// Samples put in the push buffer before the first step: history to warm up on.
    pub(crate) prefill: Vec<portent_core::Series>,
    /// Called once the servers listen and before the first step, to start tasks beside the
    /// daemon (the demo's cluster and its incident printer).
    pub(crate) on_start: Option<Box<dyn FnOnce(Started) + Send>>,
    /// Stop after this long (wall clock) as if sent SIGTERM.
    pub(crate) run_for: Option<Duration>,
}

/// What tasks started beside the daemon get.
pub(crate) struct Started {
    /// The address `server.listen` bound.
    pub(crate) addr: SocketAddr,
    /// The push buffer, filled as the remote_write receiver fills it.
    pub(crate) push: PushSink,
    /// The incidents, unless turned off.
    pub(crate) hub: Option<portent_server::Hub>,
    /// Turns true when the daemon stops.
    pub(crate) stop: watch::Receiver<bool>,
}

impl Daemon {
    /// `portent serve CONFIG`.
    fn serve(path: PathBuf) -> Self {
        Self {
            config_path: Some(path),
            clock: Clock::Wall,
            lag: Duration::ZERO,
            prefill: Vec::new(),
            on_start: None,
            run_for: None,
        }
    }
}

fn load_config(path: &Path) -> Result<(Config, Plan, Option<Client>)> {
    let config = Config::load(path).with_context(|| format!("loading {}", path.display()))?;
    let plan = Plan::from_config(&config).context("planning the config")?;
    let client = match &config.source.pull {
        Some(_) => Some(pull_client(&config)?),
        None => None,
    };
    // Checked by the config already; parsed here so that a reload fails before applying.
    push_queries(&config)?;
    Ok((config, plan, client))
}

/// The saved state, if any. A state another version of portent wrote is moved aside (kept as
/// `state.bin.vN` for a downgrade) and portent starts fresh: series are refitted from the
/// source's history at their first tick, so nothing is lost but the time that takes. Any other
/// unreadable state stops portent, since starting fresh over it would discard it.
fn load_state(dir: &Path) -> Result<Option<portent_engine::Store>> {
    match portent_engine::load(dir) {
        Ok(s) => Ok(s),
        Err(portent_engine::PersistError::Version { path, found }) => {
            let aside = path.with_extension(format!("bin.v{found}"));
            std::fs::rename(&path, &aside).with_context(|| {
                format!(
                    "moving {} (format version {found}) aside to {}",
                    path.display(),
                    aside.display()
                )
            })?;
            eprintln!(
                "portent: warning: {} was written by another version of portent (format \
                 {found}); kept as {}, starting fresh: series are refitted from the source's \
                 history",
                path.display(),
                aside.display()
            );
            Ok(None)
        }
        Err(e) => Err(e).with_context(|| format!("loading the state in {}", dir.display())),
    }
}

/// Runs `portent serve`.
pub(crate) fn run(args: &Args) -> Result<()> {
    let (config, plan, client) = load_config(&args.config)?;
    run_daemon(Daemon::serve(args.config.clone()), config, plan, client)
}

/// Runs the daemon on a loaded config until SIGTERM, SIGINT or `daemon.run_for`.
pub(crate) fn run_daemon(
    daemon: Daemon,
    config: Config,
    plan: Plan,
    client: Option<Client>,
) -> Result<()> {
    for w in &config.warnings {
        eprintln!("portent: warning: {w}");
    }
    let dir = config.storage.dir.clone();
    let scheduler = match load_state(&dir)? {
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
        // Score ticks run on the blocking pool, which by default lets a thread go after 10 s
        // idle: at a 30 s or 1 m `score_every`, every tick started a thread of its own, and
        // the allocator set up and abandoned a heap for each. An hour covers any usual tick.
        .thread_keep_alive(BLOCKING_KEEP_ALIVE)
        .build()
        .context("starting the runtime")?;
    runtime.block_on(serve(daemon, config, scheduler, client))
}

/// How long an idle thread of the blocking pool (score ticks, saves, reloads) is kept.
const BLOCKING_KEEP_ALIVE: Duration = Duration::from_secs(3600);

async fn serve(
    mut daemon: Daemon,
    config: Config,
    scheduler: Scheduler,
    client: Option<Client>,
) -> Result<()> {
    let mut registry = Registry::default();
    let metrics = SelfMetrics::new(&mut registry);
    metrics.record_initial_load(SystemTime::now());
    let history = portent_server::History::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let outputs = Arc::new(RemoteWriteOutputs::start(&config, &metrics, &stop_rx)?);
    let dir = &config.storage.dir;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating storage.dir {}", dir.display()))?;
    let incidents = Incidents::new(&config)?;
    let hub = incidents.as_ref().map(|i| i.hub.clone());
    let push = Arc::new(Mutex::new(PushBuffer::new(
        push_queries(&config)?,
        push_limits(&config),
    )));
    let sink = PushSink {
        buffer: Arc::clone(&push),
        metrics: metrics.clone(),
    };
    if !daemon.prefill.is_empty() {
        sink.ingest(std::mem::take(&mut daemon.prefill));
    }
    let engine = Arc::new(Mutex::new(Engine {
        scheduler,
        client: client.map(Arc::new),
        push_queries: push_aliases(&config),
        incidents,
    }));
    metrics.set_series_tracked(lock(&engine).scheduler.tracked());
    let scores = Scores::live(LiveScores(Arc::clone(&engine)));
    scores.register(&mut registry);
    let registry = Arc::new(registry);

    // The reloader needs the control (for the token) and the control the reloader: fill the
    // control in once built.
    let control_slot: Arc<Mutex<Option<Control>>> = Arc::new(Mutex::new(None));
    let reloader = {
        let engine = Arc::clone(&engine);
        let slot = Arc::clone(&control_slot);
        let push = Arc::clone(&push);
        let running = config.clone();
        let path = daemon.config_path.clone();
        Reloader::new(metrics.clone(), move || {
            let engine = Arc::clone(&engine);
            let slot = Arc::clone(&slot);
            let push = Arc::clone(&push);
            let path = path.clone();
            let running = running.clone();
            async move {
                let Some(path) = path else {
                    return Err(
                        "this daemon runs a built-in config, which cannot be reloaded"
                            .to_owned()
                            .into(),
                    );
                };
                let result =
                    tokio::task::spawn_blocking(move || reload(&path, &engine, &push, &running))
                        .await;
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

    let split = config.server.metrics_listen.is_some();
    let write = config
        .source
        .push
        .as_ref()
        .map(|p| receiver(sink.clone(), p.max_body_size));
    let api = hub
        .clone()
        .map(|h| portent_server::api_router(h, control.clone(), scores.clone()));
    let ui = Some(portent_server::ui_router(scores.clone(), history.clone()));
    let app = portent_server::router(
        control.clone(),
        (!split).then(|| Arc::clone(&registry)),
        [write, api, ui]
            .into_iter()
            .flatten()
            .reduce(axum::Router::merge),
    );
    let (addr, server) = listen(config.server.listen, app, stop_rx.clone()).await?;
    let mut servers = vec![server];
    if let Some(addr) = config.server.metrics_listen {
        let app = portent_server::metrics_router(Arc::clone(&registry));
        servers.push(listen(addr, app, stop_rx.clone()).await?.1);
    }
    if let Some(start) = daemon.on_start.take() {
        start(Started {
            addr,
            push: sink,
            hub: hub.clone(),
            stop: stop_rx.clone(),
        });
    }

    let notifying = hub.map(|h| {
        tokio::spawn(crate::incidents::notify(
            Arc::new(config.clone()),
            h,
            stop_rx.clone(),
        ))
    });
    let looping = tokio::spawn(run_loop(
        Loop {
            engine: Arc::clone(&engine),
            push,
            outputs,
            control: control.clone(),
            scores,
            history,
            metrics: metrics.clone(),
            dir: config.storage.dir.clone(),
            retention: config.storage.series_retention,
            clock: daemon.clock,
            lag_ms: i64::try_from(daemon.lag.as_millis()).unwrap_or(i64::MAX),
        },
        stop_rx.clone(),
    ));

    match daemon.run_for {
        Some(d) => {
            tokio::select! {
                () = wait_for_shutdown(&control) => {}
                () = tokio::time::sleep(d) => {}
            }
        }
        None => wait_for_shutdown(&control).await,
    }
    eprintln!("portent: shutting down");
    let _ = stop_tx.send(true);
    match looping.await {
        Ok(()) => {}
        Err(e) => eprintln!("portent: the scoring loop ended abnormally: {e}"),
    }
    for s in servers {
        let _ = s.await;
    }
    if let Some(n) = notifying {
        let _ = n.await;
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

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Loads the config again and applies it; returns the new API token.
fn reload(
    path: &Path,
    engine: &Mutex<Engine>,
    push: &Mutex<PushBuffer>,
    running: &Config,
) -> Result<Option<portent_config::Secret>> {
    let (config, plan, client) = load_config(path)?;
    for w in &config.warnings {
        eprintln!("portent: warning: {w}");
    }
    if config.source.push != running.source.push
        && (config.source.push.is_none() != running.source.push.is_none()
            || config.source.push.as_ref().map(|p| p.max_body_size)
                != running.source.push.as_ref().map(|p| p.max_body_size))
    {
        eprintln!(
            "portent: warning: source.push turned on or off, or its max_body_size changed: \
             restart to apply"
        );
    }
    if config.outputs != running.outputs
        || config
            .models
            .iter()
            .map(|(a, m)| (a, &m.outputs))
            .ne(running.models.iter().map(|(a, m)| (a, &m.outputs)))
    {
        eprintln!("portent: warning: outputs changed: restart to apply them to remote_write");
    }
    let queries = push_queries(&config)?;
    let mut e = lock(engine);
    let dropped = e
        .scheduler
        .set_plan(plan)
        .context("applying the new plan")?;
    e.client = client.map(Arc::new);
    e.push_queries = push_aliases(&config);
    if let Some(i) = e.incidents.as_mut() {
        i.reload(&config);
    }
    if config.incidents != running.incidents {
        eprintln!(
            "portent: warning: incidents changed: restart to apply (model thresholds are \
             reloaded)"
        );
    }
    let gone = lock(push).set_queries(queries, push_limits(&config));
    if dropped > 0 {
        eprintln!("portent: reload dropped {dropped} series no longer in the config");
    }
    if gone > 0 {
        eprintln!("portent: reload dropped {gone} pushed series no push query selects");
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

/// Serves `app` on `addr` until `stop`; returns the address bound (`addr` may ask for any
/// port) and the server's task.
async fn listen(
    addr: SocketAddr,
    app: axum::Router,
    mut stop: watch::Receiver<bool>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let bound = listener.local_addr()?;
    eprintln!("portent: listening on {bound}");
    Ok((
        bound,
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                eprintln!("portent: server on {addr}: {e}");
            }
        }),
    ))
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

/// What the scoring loop works with.
struct Loop {
    engine: Arc<Mutex<Engine>>,
    push: Arc<Mutex<PushBuffer>>,
    outputs: Arc<RemoteWriteOutputs>,
    control: Control,
    scores: Scores,
    history: portent_server::History,
    metrics: SelfMetrics,
    dir: PathBuf,
    retention: Duration,
    clock: Clock,
    /// [`Daemon::lag`] in milliseconds.
    lag_ms: i64,
}

/// Steps the scheduler when due, until told to stop.
async fn run_loop(l: Loop, mut stop: watch::Receiver<bool>) {
    let mut last_save = tokio::time::Instant::now();
    let retention_ms = i64::try_from(l.retention.as_millis()).unwrap_or(i64::MAX);
    loop {
        let (clock, lag_ms) = (l.clock, l.lag_ms);
        let now = move || clock.now().add_millis(-lag_ms);
        let due = lock(&l.engine).scheduler.next_due();
        let wait = match due {
            Some(t) => l
                .clock
                .wall_wait(t.millis().saturating_sub(now().millis()))
                .min(MAX_SLEEP),
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
        let (eng, sc, push) = (Arc::clone(&l.engine), l.scores.clone(), Arc::clone(&l.push));
        let (history, outputs) = (l.history.clone(), Arc::clone(&l.outputs));
        let stepped = tokio::task::spawn_blocking(move || {
            let mut guard = lock(&eng);
            let e = &mut *guard;
            let source = Routed {
                pull: e.client.as_ref().map(|client| PullSource {
                    client: Arc::clone(client),
                    handle,
                }),
                push: &push,
                push_queries: &e.push_queries,
            };
            let windows = e
                .incidents
                .as_ref()
                .map(|i| i.hub.exclusions())
                .unwrap_or_default();
            let mut source = Excluding {
                inner: source,
                windows: &windows,
            };
            let t = now();
            // Each consumer keeps a small part of the verdicts (the incidents those over their
            // threshold, the history up to its series, the outputs those of their models), so
            // they take them a chunk at a time: a whole tick of them at once, 128 bytes a
            // series, was most of the peak over resident memory.
            let mut offer = e.incidents.as_ref().map(|i| (i, i.offer()));
            let report = e.scheduler.step_into(t, &mut source, &mut |chunk| {
                if let Some((i, o)) = offer.as_mut() {
                    i.take(o, chunk);
                }
                history.record(
                    chunk
                        .iter()
                        .map(|s| (&s.query, &s.model, &s.labels, &s.scored)),
                );
                outputs.enqueue(chunk);
            });
            let observed = offer.map(|(i, o)| i.close(o, t)).unwrap_or_default();
            publish_contributions(&e.scheduler, &sc);
            // Charts of series the daemon no longer tracks (expired, ended, dropped by a
            // reload) go with them. Here, under the lock the scores are read under.
            history.retain(|k| latest_of(&e.scheduler, &k.query, &k.model, &k.labels).is_some());
            let pushed = {
                let mut b = lock(&push);
                b.expire_due(t, retention_ms);
                (b.series_count(), b.sample_count())
            };
            let by_source: Vec<bool> = e
                .scheduler
                .plan()
                .jobs
                .iter()
                .map(|j| e.push_queries.contains(&j.query))
                .collect();
            let tracked = e.scheduler.tracked();
            let observed = (observed.anomalies, observed.held_back_by_feedback);
            (
                report,
                tracked,
                pushed,
                by_source,
                e.push_queries.clone(),
                observed,
            )
        })
        .await;
        let (report, tracked, pushed, is_push, push_queries, observed) = match stepped {
            Ok(x) => x,
            Err(e) => {
                eprintln!("portent: a step panicked: {e}");
                continue;
            }
        };
        l.metrics.set_push_buffer(pushed.0, pushed.1);
        l.metrics.add_incident_anomalies(
            u64::try_from(observed.0).unwrap_or(0),
            u64::try_from(observed.1).unwrap_or(0),
        );
        account(&report, &is_push, &push_queries, tracked, &l.metrics);
        if report.errors.is_empty() && report.score_ticks > 0 && !l.control.is_ready() {
            l.control.set_ready(true);
            eprintln!("portent: ready");
        }
        if last_save.elapsed() >= SAVE_EVERY {
            last_save = tokio::time::Instant::now();
            let (eng, dir, m) = (Arc::clone(&l.engine), l.dir.clone(), l.metrics.clone());
            match tokio::task::spawn_blocking(move || save(&eng, &dir, &m)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("portent: {e:#}"),
                Err(e) => eprintln!("portent: saving the state: {e}"),
            }
        }
    }
}

/// Sets each multivariate verdict's feature shares in `scores` (a multivariate verdict's
/// `query` is its model's alias); the verdicts themselves are read in place ([`LiveScores`]).
fn publish_contributions(scheduler: &Scheduler, scores: &Scores) {
    let mut contributions = portent_server::Contributions::new();
    for j in scheduler.joint_latest() {
        let model: Arc<str> = j.model.into();
        let features = j
            .features
            .iter()
            .zip(j.contributions)
            .map(|(f, c)| (Arc::<str>::from(f.query.as_str()), *c))
            .collect();
        contributions.insert(
            ScoreKey::new(Arc::clone(&model), model, j.labels.clone()),
            features,
        );
    }
    scores.set_contributions(contributions);
}

/// The latest verdict of every series and multivariate entity the scheduler tracks, read in
/// place for `/metrics`, the web UI and the API: exactly the tracked series, with nothing to
/// copy after a step and nothing to forget when a series goes. A reader waits for a step in
/// progress, and a step for a scrape (under a second at 100,000 series).
///
/// Nothing that holds the engine's lock may read these scores: the lock is not reentrant.
struct LiveScores(Arc<Mutex<Engine>>);

impl portent_server::LatestScores for LiveScores {
    fn read(&self, read: &mut dyn FnMut(&dyn portent_server::Verdicts)) {
        read(&Tracked(&lock(&self.0).scheduler));
    }
}

/// The latest verdicts of what `scheduler` tracks, under the engine's lock.
struct Tracked<'a>(&'a Scheduler);

impl portent_server::Verdicts for Tracked<'_> {
    fn for_each(&self, visit: &mut dyn FnMut(&str, &str, &Labels, &Scored)) {
        for l in self.0.store().latest() {
            visit(l.query, l.model, l.labels, l.scored);
        }
        for j in self.0.joint_latest() {
            visit(j.model, j.model, j.labels, j.scored);
        }
    }

    fn get(&self, query: &str, model: &str, labels: &Labels) -> Option<Scored> {
        latest_of(self.0, query, model, labels)
    }

    fn len(&self) -> usize {
        self.0.store().latest().count() + self.0.joint_latest().count()
    }
}

/// The latest verdict of one series or multivariate entity (whose query is its model).
fn latest_of(scheduler: &Scheduler, query: &str, model: &str, labels: &Labels) -> Option<Scored> {
    if let Some(e) = scheduler.store().get(model, query, labels) {
        return e.latest;
    }
    (query == model)
        .then(|| scheduler.joint_latest_of(model, labels).map(|j| *j.scored))
        .flatten()
}

/// Self-metrics and logs of one step; `is_push[i]` says whether job `i` reads the push buffer.
fn account(
    report: &StepReport,
    is_push: &[bool],
    push_queries: &HashSet<String>,
    tracked: usize,
    metrics: &SelfMetrics,
) {
    metrics.set_series_tracked(tracked);
    // Pushed samples are counted as they arrive (by the receiver); pulled ones when scored.
    let pulled: usize = report
        .samples_scored_by_job
        .iter()
        .zip(is_push)
        .filter(|(_, push)| !**push)
        .map(|(n, _)| n)
        .sum();
    if pulled > 0 || is_push.iter().any(|p| !p) {
        metrics.add_samples_ingested("pull", u64::try_from(pulled).unwrap_or(0));
    }
    // The report times all models together.
    if report.score_ticks > 0 {
        metrics.observe_score("all", report.score_time);
    }
    if report.fit_ticks > 0 {
        metrics.observe_fit("all", report.fit_time);
    }
    metrics.add_fits(
        u64::try_from(report.fitted).unwrap_or(0),
        u64::try_from(report.fit_failures).unwrap_or(0),
    );
    for query in &report.source_gaps {
        metrics.inc_source_gap(query);
    }
    for e in &report.errors {
        metrics.inc_source_errors(if push_queries.contains(&e.query) {
            "push"
        } else {
            "pull"
        });
        eprintln!(
            "portent: {} {} query {:?}: {} (retried at the next tick)",
            e.model,
            e.request.as_str(),
            e.query,
            e.message
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_of_another_version_is_kept_aside_and_portent_starts_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let stats = portent_engine::save(&portent_engine::Store::new(), dir.path()).unwrap();
        let mut bytes = std::fs::read(&stats.path).unwrap();
        bytes[8] = 1; // the version field, after the 8-byte magic
        std::fs::write(&stats.path, &bytes).unwrap();
        assert!(load_state(dir.path()).unwrap().is_none());
        assert!(!stats.path.exists());
        assert_eq!(
            std::fs::read(dir.path().join("state.bin.v1")).unwrap(),
            bytes
        );
        // Anything else unreadable stops portent rather than being discarded.
        std::fs::write(&stats.path, b"not a state file").unwrap();
        let e = format!("{:#}", load_state(dir.path()).unwrap_err());
        assert!(e.contains("not a portent state file"), "{e}");
        assert!(stats.path.exists());
    }
}
