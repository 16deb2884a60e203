//! `portent eval`: detection quality on benchmark corpora.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use portent_config::parse_duration;
use portent_engine::RefitPolicy;
use portent_eval::nab::{self, Corpus, Profile, Sweep};
use portent_eval::replay::{anomaly_scores, replay_corpus};
use portent_eval::sim::{self, SimEvalConfig};
use portent_models::DetectorConfig;
use std::time::Duration;

/// Benchmarks.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// The Numenta Anomaly Benchmark: replay all files causally, write NAB's results layout,
    /// and score it by NAB's rules.
    Nab(NabArgs),
    /// The simulated cluster's incident scenarios: detected or not, detection delay and false
    /// alarms, for the univariate and multivariate models against static thresholds.
    Sim(SimArgs),
}

/// Options of `portent eval sim`.
#[derive(Debug, clap::Args)]
pub(crate) struct SimArgs {
    /// Seeds the cluster and the multivariate models: the same seed gives the same report.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Simulated days after the history weeks, from a Monday; the first two are warm-up, then
    /// the default scenarios that end within this span run (3 days: 2 scenarios, 5: all 7).
    #[arg(long, default_value_t = 7)]
    days: u32,
    /// Clean weeks simulated first, for the models to learn from (as portent learns from the
    /// history it reads from Prometheus when it starts).
    #[arg(long, default_value_t = 1)]
    history_weeks: u32,
    /// Time between samples (e.g. 1m, 5m): coarser is faster.
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    step: Duration,
    /// Print the results as one JSON object on the last line.
    #[arg(long)]
    json: bool,
    /// Do not report progress on standard error.
    #[arg(long)]
    quiet: bool,
    /// Fail (exit 1) unless the run meets portent's bar on the simulator: every scenario
    /// detected; the latency creep flagged within 15 minutes of becoming statistically
    /// visible and before any static threshold; at most one false alarm per entity per day;
    /// the joint shift caught by the multivariate models and by no univariate series.
    #[arg(long)]
    bar: bool,
}

/// Options of `portent eval nab`.
#[derive(Debug, clap::Args)]
pub(crate) struct NabArgs {
    /// The NAB directory (holding data/, labels/ and config/).
    #[arg(long, default_value = "../shared/datasets/nab")]
    data: PathBuf,
    /// Where to write results (`<out>/portent/<category>/portent_<file>.csv`, plus the null
    /// detector's files that NAB's scorer normalises against).
    #[arg(long)]
    out: Option<PathBuf>,
    /// A windows file other than labels/combined_windows.json (e.g. the tiny subset).
    #[arg(long)]
    windows: Option<PathBuf>,
    /// Print the scores as one JSON object on the last line.
    #[arg(long)]
    json: bool,
    /// Fail (exit 1) if a profile scores below its floor in this JSON file
    /// (`{"standard": …, "reward_low_FP_rate": …, "reward_low_FN_rate": …}`).
    #[arg(long)]
    floor: Option<PathBuf>,
    /// Do not draw a progress bar.
    #[arg(long)]
    quiet: bool,
}

/// The detector's name in NAB's layout (NAB splits file names on `_`, so none here).
const DETECTOR: &str = "portent";

pub(crate) fn run(cmd: &Command) -> anyhow::Result<()> {
    match cmd {
        Command::Nab(args) => nab_run(args),
        Command::Sim(args) => sim_run(args),
    }
}

fn sim_run(args: &SimArgs) -> anyhow::Result<()> {
    if args.days < 3 {
        bail!(
            "--days {}: must be at least 3 (two warm-up days, then the scenarios)",
            args.days
        );
    }
    if args.step < Duration::from_secs(1) || args.step > Duration::from_secs(3600) {
        bail!("--step {:?}: must be between 1s and 1h", args.step);
    }
    let mut config = SimEvalConfig::with_history(args.seed, args.history_weeks, args.days);
    config.sim.step = args.step;
    let started = std::time::Instant::now();
    let quiet = args.quiet;
    let report = sim::run(&config, &|phase| {
        if !quiet {
            eprintln!("[{:>6.1?}] {phase}", started.elapsed());
        }
    })?;
    let elapsed = started.elapsed();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "portent eval sim: seed {}, {} weeks of history and {} days at {:?} steps, {} scenarios, \
         {} entities, {} series, {:.1?}",
        args.seed,
        args.history_weeks,
        args.days,
        args.step,
        report.scenarios.len(),
        report.entities,
        report.series,
        elapsed
    )?;
    write!(out, "{}", report.table())?;
    if args.json {
        writeln!(out, "{}", report.to_json_line())?;
    }
    if args.bar {
        let short = report.shortfalls();
        if !short.is_empty() {
            bail!(
                "seed {}: below the bar on the simulator: {}",
                args.seed,
                short.join("; ")
            );
        }
    }
    Ok(())
}

fn nab_run(args: &NabArgs) -> anyhow::Result<()> {
    let corpus = match &args.windows {
        Some(w) => Corpus::load_with_windows(&args.data, w),
        None => Corpus::load(&args.data),
    }
    .with_context(|| format!("loading NAB from {}", args.data.display()))?;
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(corpus.rows() as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} replaying NAB {pos}/{len} rows {wide_bar} {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let started = std::time::Instant::now();
    let scored = replay_corpus(
        &corpus,
        &DetectorConfig::default(),
        &RefitPolicy::default(),
        threads,
        &|rows| bar.inc(rows as u64),
    )?;
    bar.finish_and_clear();
    let elapsed = started.elapsed();
    let scores = anomaly_scores(&scored);

    if let Some(out) = &args.out {
        nab::write_results(out, DETECTOR, &corpus, &scores)?;
        nab::write_null_results(out, &corpus)?;
    }
    let sweep = Sweep::new(&corpus, &scores)?;
    // Written through a handle, not println!, so a closed pipe is an error (ended quietly in
    // main) rather than a panic.
    let mut out = std::io::stdout().lock();
    let mut results = serde_json::Map::new();
    writeln!(
        out,
        "NAB v1.1: {} files, {} rows, {} windows, replayed in {:.1?}",
        corpus.files.len(),
        corpus.rows(),
        corpus.window_count(),
        elapsed
    )?;
    writeln!(
        out,
        "{:<20} {:>7} {:>10} {:>9} {:>7} {:>5}",
        "profile", "score", "threshold", "detected", "missed", "FP"
    )?;
    for profile in Profile::all() {
        let s = sweep.optimize(&profile)?;
        writeln!(
            out,
            "{:<20} {:>7.2} {:>10.4} {:>9} {:>7} {:>5}",
            s.profile,
            s.normalized,
            s.threshold,
            s.detected_windows,
            s.missed_windows,
            s.false_positives
        )?;
        results.insert(s.profile.clone(), serde_json::json!(round2(s.normalized)));
    }
    if let Some(dir) = &args.out {
        writeln!(out, "results: {}", dir.join(DETECTOR).display())?;
    }
    let mut failed = Vec::new();
    if let Some(floor_path) = &args.floor {
        let text = std::fs::read_to_string(floor_path)
            .with_context(|| format!("reading floor {}", floor_path.display()))?;
        let floor: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text)
            .with_context(|| {
                format!(
                    "{}: expected a JSON object of profile floors",
                    floor_path.display()
                )
            })?;
        for (profile, min) in &floor {
            let Some(min) = min.as_f64() else {
                bail!(
                    "{}: floor for {profile} is not a number",
                    floor_path.display()
                );
            };
            let Some(got) = results.get(profile).and_then(serde_json::Value::as_f64) else {
                bail!("{}: unknown profile {profile}", floor_path.display());
            };
            if got < min {
                failed.push(format!("{profile} {got:.2} < floor {min:.2}"));
            }
        }
    }
    if args.json {
        writeln!(out, "{}", serde_json::Value::Object(results))?;
    }
    if !failed.is_empty() {
        bail!("NAB regression: {}", failed.join(", "));
    }
    Ok(())
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
