//! `portent demo`: the simulated cluster, in accelerated time, through the real daemon.
//!
//! ```text
//! portent demo [--listen 127.0.0.1:9099] [--speed 60] [--for 2m --expect-incident]
//! ```
//!
//! Nothing here is a separate path: the demo builds a config (push queries over the
//! cluster's recorded series, [`DEMO_CONFIG`]), and runs [`serve`](crate::serve)'s daemon on
//! it with three differences, all in [`Daemon`]:
//!
//! * the clock is simulated, `--speed` times faster than the wall clock, so that an hour of
//!   the cluster passes in a minute at the default speed;
//! * before the first step, `--history` of the cluster (three days by default) is put in the
//!   push buffer, as if Prometheus had been remote_writing it, so the models warm up on it;
//! * beside the daemon, a thread runs the cluster ([`portent_sim::Cluster`]) on that clock
//!   and pushes its recorded series ([`portent_sim::Recorder`]: the rates, ratios and p99s an
//!   SRE would write as recording rules) into the push buffer, and a task prints each
//!   incident as it opens, fires and resolves, with its explanation.
//!
//! The incidents are the simulator's scenarios, placed so the first (a bad rollout) begins
//! ten simulated minutes after the start: at the default speed an incident opens within the
//! first minute. Each scenario is announced when it begins, so what portent says can be
//! checked against what really happened. Steps run two simulated steps behind the clock, so
//! samples pushed a moment late are still read.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use portent_config::{Config, parse_duration};
use portent_core::{Labels, Sample, Series, Timestamp};
use portent_engine::Plan;
use portent_incidents::pack::rfc3339;
use portent_sim::{Cluster, Recorder, Scenario, ScenarioKind, SimConfig};
use tokio::sync::watch;

use crate::push::PushSink;
use crate::serve::{Clock, Daemon, Started};

/// The API token of the demo: the UI's feedback buttons need one.
pub(crate) const DEMO_TOKEN: &str = "demo";

/// The simulated step between samples.
const STEP: Duration = Duration::from_secs(60);

/// Rates in the recording rules are over this window, as `rate(…[5m])`.
const RATE_WINDOW_MS: i64 = 5 * 60_000;

/// How often (wall clock) the cluster thread catches up with the clock.
const FEED_EVERY: Duration = Duration::from_millis(200);

/// How often (wall clock) incidents are looked at for the printout.
const PRINT_EVERY: Duration = Duration::from_secs(1);

/// The demo's config: `{listen}` and `{dir}` are filled in. Push queries over the recorded
/// series (see [`portent_sim::Recorder`]); one schedule that fits on the history the demo
/// pushes before starting; incidents with their defaults.
pub(crate) const DEMO_CONFIG: &str = r#"# portent demo: the simulated cluster's recorded series, pushed into the daemon.
server:
  listen: "{listen}"
  bearer_token: "{token}"
source:
  push:
    # Three days at one sample a minute, and room for the live run.
    max_samples_per_series: 6000
queries:
  pods:
    expr: '{__name__=~"pod:.+"}'
  services:
    expr: '{__name__=~"service:.+"}'
  nodes:
    expr: '{__name__=~"node:.+"}'
  # The same pod series again, one query per feature of the multivariate model.
  pod_cpu:
    expr: 'pod:cpu_usage:cores'
  pod_memory:
    expr: 'pod:memory_working_set:bytes'
  pod_latency:
    expr: 'pod:http_latency_p99:seconds'
  pod_errors:
    expr: 'pod:http_errors:ratio'
schedules:
  demo:
    score_every: 1m
    fit_every: 6h
    fit_window: 3d
models:
  default:
    type: auto
    queries: [pods, services, nodes]
  # Each pod's row of CPU, memory, p99 latency and error ratio, one Isolation Forest per
  # deployment: values that are each normal but unusual together.
  pod_health:
    type: isolation_forest
    queries: [pod_cpu, pod_memory, pod_latency, pod_errors]
    join_on: [namespace, pod]
    pool_by: [namespace, deployment]
storage:
  dir: "{dir}"
"#;

/// Arguments of `portent demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Where to serve the UI, the API and /metrics (loopback by default).
    #[arg(long, default_value = "127.0.0.1:9099")]
    listen: SocketAddr,
    /// How many times faster than real time the simulated cluster runs (60: an hour a minute).
    #[arg(long, default_value_t = 60.0)]
    speed: f64,
    /// Seeds the cluster: the same seed gives the same cluster and incidents.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Simulated history pushed before the live run, for the models to learn on.
    #[arg(long, default_value = "3d", value_parser = parse_duration)]
    history: Duration,
    /// Stop after this long (real time) instead of at Ctrl-C.
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
    run_for: Option<Duration>,
    /// With --for: exit with an error unless an incident opened by then.
    #[arg(long, requires = "run_for")]
    expect_incident: bool,
    /// Keep the daemon's state and feedback here (default: a temporary directory, removed on
    /// exit).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// The scenarios of the demo, from the live start `live`: one of each kind, the quick and
/// obvious ones first.
fn scenarios(live: Timestamp) -> Vec<Scenario> {
    const MIN: i64 = 60_000;
    let at = |m: i64| live.add_millis(m * MIN);
    // The night traffic drop is only unusual at night: the first 03:00 UTC after 15 hours.
    let day = 24 * 60 * MIN;
    let after = at(15 * 60).millis();
    let three = 3 * 60 * MIN;
    let mut night = after - after.rem_euclid(day) + three;
    if night < after {
        night += day;
    }
    let night = Timestamp::from_millis(night);
    vec![
        Scenario::new(ScenarioKind::BadRollout, at(10), at(55), "shop", "frontend"),
        Scenario::new(ScenarioKind::Crashloop, at(90), at(150), "shop", "catalog"),
        Scenario::new(
            ScenarioKind::NoisyNeighbour,
            at(180),
            at(220),
            "batch",
            "ingest",
        ),
        Scenario::new(
            ScenarioKind::MemoryLeak,
            at(240),
            at(600),
            "payments",
            "payments-api",
        ),
        Scenario::new(
            ScenarioKind::LatencyCreep,
            at(300),
            at(660),
            "shop",
            "checkout",
        ),
        Scenario::new(ScenarioKind::JointShift, at(720), at(870), "shop", "cart"),
        Scenario::new(
            ScenarioKind::NightTrafficDrop,
            night,
            night.add_millis(60 * MIN),
            "batch",
            "ingest",
        ),
    ]
}

/// The cluster and its recording rules, stepped together.
struct Feed {
    cluster: Cluster,
    recorder: Recorder,
    /// Scenarios not announced yet, by start.
    pending: Vec<Scenario>,
}

impl Feed {
    /// Runs the cluster up to (not including) `until`; returns the recorded series.
    fn run(&mut self, until: Timestamp) -> Vec<Series> {
        let mut out = Vec::new();
        while self.cluster.now() < until {
            let snapshot = self.cluster.snapshot();
            let t = snapshot.t;
            out.extend(
                self.recorder
                    .record(&snapshot)
                    .into_iter()
                    .map(|(labels, v)| series(labels, t, v)),
            );
            self.cluster.tick();
        }
        out
    }

    /// Scenarios that began before `now`, each once.
    fn began(&mut self, now: Timestamp) -> Vec<Scenario> {
        let (begun, rest) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|s| s.start <= now);
        self.pending = rest;
        begun
    }
}

fn series(labels: Labels, t: Timestamp, v: f64) -> Series {
    Series {
        labels,
        samples: vec![Sample::new(t, v)],
    }
}

/// Runs `portent demo`.
pub(crate) fn run(args: &Args) -> Result<()> {
    if !(args.speed.is_finite() && args.speed >= 1.0 && args.speed <= 100_000.0) {
        bail!(
            "--speed {}: must be between 1 (real time) and 100000",
            args.speed
        );
    }
    if args.history < Duration::from_secs(3600) {
        bail!("--history must be at least 1h: the models need something to learn from");
    }
    let (dir, temporary) = match &args.dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("portent-demo-{}", std::process::id())),
            true,
        ),
    };
    let result = demo(args, &dir);
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn demo(args: &Args, dir: &std::path::Path) -> Result<()> {
    let text = DEMO_CONFIG
        .replace("{listen}", &args.listen.to_string())
        .replace("{token}", DEMO_TOKEN)
        .replace("{dir}", &dir.display().to_string());
    let config = Config::from_yaml(&text, dir).context("the demo's built-in config")?;
    let plan = Plan::from_config(&config).context("planning the demo's config")?;

    let step_ms = i64::try_from(STEP.as_millis()).unwrap_or(60_000);
    let now = crate::serve::Clock::Wall.now();
    let live = Timestamp::from_millis(now.millis() - now.millis().rem_euclid(step_ms));
    let history_ms = i64::try_from(args.history.as_millis()).unwrap_or(i64::MAX);
    let mut sim = SimConfig::new(args.seed, live.add_millis(-history_ms), STEP);
    sim.scenarios = scenarios(live);
    let cluster = Cluster::new(sim.clone()).context("the simulated cluster")?;
    let mut feed = Feed {
        recorder: Recorder::new(cluster.step_millis(), RATE_WINDOW_MS),
        cluster,
        pending: sim.scenarios.clone(),
    };
    let started = Instant::now();
    let prefill = feed.run(live);
    eprintln!(
        "portent demo: simulated {} of history of a cluster with {} pods ({} samples) in {:.1}s",
        humantime(args.history),
        feed.cluster.pods().len(),
        prefill.len(),
        started.elapsed().as_secs_f64()
    );
    let opened = Arc::new(AtomicUsize::new(0));
    let clock = Clock::Accelerated {
        wall: Instant::now(),
        sim: live,
        speed: args.speed,
    };
    let speed = args.speed;
    let seen = Arc::clone(&opened);
    let daemon = Daemon {
        config_path: None,
        clock,
        lag: 2 * STEP,
        prefill,
        on_start: Some(Box::new(move |s: Started| {
            print_banner(s.addr, speed);
            let Started {
                push, hub, stop, ..
            } = s;
            let feeding = stop.clone();
            std::thread::Builder::new()
                .name("demo-cluster".into())
                .spawn(move || feed_forever(feed, clock, &push, &feeding))
                .map(drop)
                .unwrap_or_else(|e| eprintln!("portent demo: cannot start the cluster: {e}"));
            if let Some(hub) = hub {
                tokio::spawn(print_incidents(hub, s.addr, seen, stop));
            }
        })),
        run_for: args.run_for,
    };
    crate::serve::run_daemon(daemon, config, plan, None)?;
    let n = opened.load(Ordering::Relaxed);
    eprintln!("portent demo: stopped; {n} incidents opened");
    if args.expect_incident && n == 0 {
        bail!("no incident opened within --for; see the log above");
    }
    Ok(())
}

fn humantime(d: Duration) -> String {
    let h = d.as_secs() / 3600;
    if h.is_multiple_of(24) {
        format!("{} days", h / 24)
    } else {
        format!("{h} hours")
    }
}

fn print_banner(addr: SocketAddr, speed: f64) {
    println!(
        "\nportent demo: a simulated cluster at {speed}x real time, scored live by portent.\n\
         \n  UI:         http://{addr}/\n  incidents:  http://{addr}/api/v1/incidents\n  \
         metrics:    http://{addr}/metrics\n  API token:  {DEMO_TOKEN}   (for the feedback \
         buttons)\n\nIncidents are printed here as they open and resolve. Ctrl-C stops.\n"
    );
}

/// Keeps the cluster in step with the clock, pushing what it records, until `stop`.
fn feed_forever(mut feed: Feed, clock: Clock, push: &PushSink, stop: &watch::Receiver<bool>) {
    while !*stop.borrow() {
        let now = clock.now();
        for s in feed.began(now) {
            println!(
                "[{}] scenario begins: {} in {}/{} (ground truth, until {})",
                rfc3339(s.start),
                s.name,
                s.namespace,
                s.deployment,
                rfc3339(s.end)
            );
        }
        let series = feed.run(now);
        if !series.is_empty() {
            push.ingest(series);
        }
        std::thread::sleep(FEED_EVERY);
    }
}

/// Prints each incident's state changes, with its explanation when it opens.
async fn print_incidents(
    hub: portent_server::Hub,
    addr: SocketAddr,
    opened: Arc<AtomicUsize>,
    mut stop: watch::Receiver<bool>,
) {
    let mut states: HashMap<String, String> = HashMap::new();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(PRINT_EVERY) => {}
        }
        for pack in hub.packs() {
            let inc = &pack.incident;
            let state = inc.state.to_string();
            let before = states.insert(inc.id.clone(), state.clone());
            if before.as_deref() == Some(state.as_str()) {
                continue;
            }
            if before.is_none() {
                opened.fetch_add(1, Ordering::Relaxed);
            }
            let mut out = format!(
                "[{}] incident {} {}",
                rfc3339(hub.now()),
                inc.id,
                state.to_uppercase()
            );
            if before.is_none() || state == "firing" {
                for line in pack.explain().lines() {
                    let _ = write!(out, "\n    {line}");
                }
                let _ = write!(out, "\n    http://{addr}/api/v1/incidents/{}", inc.id);
            }
            println!("{out}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_config_loads_and_plans() {
        let dir = tempfile::tempdir().unwrap();
        let text = DEMO_CONFIG
            .replace("{listen}", "127.0.0.1:0")
            .replace("{token}", DEMO_TOKEN)
            .replace("{dir}", &dir.path().display().to_string());
        let config = Config::from_yaml(&text, dir.path()).unwrap();
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
        Plan::from_config(&config).unwrap();
    }

    #[test]
    fn scenarios_are_valid_one_of_each_kind_and_the_first_is_soon() {
        let live = Timestamp::from_secs(1_764_400_000);
        let all = scenarios(live);
        let mut sim = SimConfig::new(1, live.add_millis(-86_400_000), STEP);
        sim.scenarios = all.clone();
        sim.validate().unwrap();
        for k in ScenarioKind::ALL {
            assert_eq!(all.iter().filter(|s| s.kind == k).count(), 1, "{k:?}");
        }
        let first = all.iter().map(|s| s.start).min().unwrap();
        assert_eq!(first, live.add_millis(10 * 60_000));
        let night = all
            .iter()
            .find(|s| s.kind == ScenarioKind::NightTrafficDrop)
            .unwrap();
        assert_eq!(night.start.millis().rem_euclid(86_400_000), 3 * 3_600_000);
        // Scenarios on the same deployment do not overlap.
        for a in &all {
            for b in &all {
                if !std::ptr::eq(a, b) && a.namespace == b.namespace && a.deployment == b.deployment
                {
                    assert!(a.end <= b.start || b.end <= a.start, "{a:?} {b:?}");
                }
            }
        }
    }
}
