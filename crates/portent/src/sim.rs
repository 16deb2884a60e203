//! `portent sim`: the simulated Kubernetes cluster, written to files or served at `/metrics`.

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use portent_config::parse_duration;
use portent_core::Timestamp;
use portent_sim::{
    Cluster, CsvWriter, DEFAULT_START, SimConfig, default_scenarios, write_truth_json,
};

/// At most this many steps are simulated to answer one scrape (a slow scraper at a high speed
/// catches up over several scrapes instead of stalling).
const MAX_CATCH_UP_STEPS: u32 = 200_000;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Seeds every random draw: the same seed gives the same cluster, sample for sample.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Simulated days (written with --csv; with --serve, the span of the incident schedule).
    #[arg(long, default_value_t = 7)]
    days: u32,
    /// Time between samples (e.g. 15s, 1m).
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    step: Duration,
    /// Time of the first sample, RFC 3339. Default: Monday 2024-01-01T00:00:00Z for files, now
    /// for --serve. Incidents begin on the third day.
    #[arg(long)]
    start: Option<jiff::Timestamp>,
    /// Simulate a healthy cluster, without the default incidents.
    #[arg(long)]
    no_incidents: bool,
    /// Write every sample to OUT as CSV: timestamp (ms),series,value.
    #[arg(long, value_name = "OUT")]
    csv: Option<PathBuf>,
    /// Write the incidents' ground truth to OUT.json.
    #[arg(long, value_name = "OUT.json")]
    truth: Option<PathBuf>,
    /// Serve the cluster's current state at http://ADDR/metrics instead of writing files.
    #[arg(long, value_name = "ADDR", conflicts_with_all = ["csv", "truth"])]
    serve: Option<SocketAddr>,
    /// With --serve: how many times faster than real time the simulated clock runs.
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    if args.days == 0 {
        bail!("--days must be at least 1");
    }
    if let Some(addr) = args.serve {
        if !(args.speed.is_finite() && args.speed > 0.0 && args.speed <= 1e6) {
            bail!(
                "--speed {}: must be above 0 and at most 1000000",
                args.speed
            );
        }
        let now = jiff::Timestamp::now().as_millisecond();
        let step = i64::try_from(args.step.as_millis())
            .unwrap_or(i64::MAX)
            .max(1);
        let start = args
            .start
            .map_or(Timestamp::from_millis(now - now.rem_euclid(step)), to_ts);
        return serve(addr, config(args, start)?, args.speed);
    }
    if args.csv.is_none() && args.truth.is_none() {
        bail!("nothing to do: give --csv OUT and/or --truth OUT.json, or --serve ADDR");
    }
    let start = args.start.map_or(DEFAULT_START, to_ts);
    let mut cluster = Cluster::new(config(args, start)?).context("simulated cluster")?;
    let end = start.add_millis(i64::from(args.days) * 86_400_000);
    let mut rows = 0;
    if let Some(path) = &args.csv {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut out = CsvWriter::new(BufWriter::new(file))?;
        let mut failed = None;
        cluster.run(end, |labels, sample| {
            if failed.is_none()
                && let Err(e) = out.write(labels, sample)
            {
                failed = Some(e);
            }
        });
        rows = out.rows();
        let flushed = out.finish().and_then(|mut w| w.flush());
        failed
            .map_or(flushed, Err)
            .with_context(|| format!("writing {}", path.display()))?;
    } else {
        cluster.run(end, |_, _| {});
    }
    if let Some(path) = &args.truth {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut w = BufWriter::new(file);
        write_truth_json(cluster.truth(), &mut w)
            .and_then(|()| w.flush())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "simulated {} days at {:?} steps (seed {}): {rows} samples, {} incidents",
        args.days,
        args.step,
        args.seed,
        cluster.truth().len()
    );
    Ok(())
}

fn to_ts(t: jiff::Timestamp) -> Timestamp {
    Timestamp::from_millis(t.as_millisecond())
}

fn config(args: &Args, start: Timestamp) -> anyhow::Result<SimConfig> {
    let mut config = SimConfig::new(args.seed, start, args.step);
    if !args.no_incidents {
        config.scenarios = default_scenarios(start, args.days);
    }
    config.validate().context("simulated cluster")?;
    Ok(config)
}

/// The cluster and the two clocks it is kept in step with.
struct Served {
    cluster: Cluster,
    real_origin: Instant,
    sim_origin: Timestamp,
    speed: f64,
}

impl Served {
    /// Advances the simulated clock to `speed` × the real time elapsed, then renders.
    fn scrape(&mut self) -> String {
        let elapsed = self.real_origin.elapsed().as_secs_f64() * 1000.0 * self.speed;
        let target = self.sim_origin.add_millis(elapsed as i64);
        let step = self.cluster.step_millis();
        for _ in 0..MAX_CATCH_UP_STEPS {
            if self.cluster.now().add_millis(step) > target {
                break;
            }
            self.cluster.tick();
        }
        self.cluster.render_exposition()
    }
}

fn serve(addr: SocketAddr, config: SimConfig, speed: f64) -> anyhow::Result<()> {
    let sim_origin = config.start;
    let cluster = Cluster::new(config).context("simulated cluster")?;
    let state = Arc::new(Mutex::new(Served {
        cluster,
        real_origin: Instant::now(),
        sim_origin,
        speed,
    }));
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let state = Arc::clone(&state);
            async move {
                // A poisoned lock only means an earlier scrape panicked; the state is whole.
                let body = state.lock().unwrap_or_else(|e| e.into_inner()).scrape();
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    body,
                )
            }
        }),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr}"))?;
        eprintln!(
            "portent sim: serving http://{addr}/metrics, the simulated clock at {speed}x real time"
        );
        axum::serve(listener, app).await.context("serving /metrics")
    })
}
