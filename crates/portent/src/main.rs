//! The `portent` command line: one binary, one subcommand per job.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod ask;
mod backtest;
mod check;
mod demo;
mod detect;
mod eval;
mod explain;
mod incidents;
mod intervals;
mod outputs;
mod plot;
mod pull;
mod push;
mod rules;
mod sample;
mod serve;
mod sim;

// The push path allocates a label set per sample received (remote_write 1.0 repeats every
// series' labels in every request): with glibc's allocator (and musl's, in the static image)
// malloc and free were half its cycles. mimalloc made it about twice as fast and smaller
// (BENCHMARKS.md, "The push path").
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Prometheus-native anomaly detection: learns what normal looks like for every series,
/// scores each new sample, and explains what is unusual.
#[derive(Debug, Parser)]
#[command(name = "portent", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Watch portent catch incidents in a simulated cluster, live, in the browser: no setup.
    Demo(demo::Args),
    /// Score a file of samples (CSV or Prometheus query_range JSON), summarise and plot it.
    Detect(detect::Args),
    /// Measure detection quality on a benchmark corpus.
    #[command(subcommand)]
    Eval(eval::Command),
    /// Validate a config file and every PromQL expression in it, then summarise it.
    Check(check::Args),
    /// Write Prometheus alerting rules (a rule file or a PrometheusRule) on the scores.
    Rules(rules::Args),
    /// Run the daemon: pull or receive samples, score them, expose and remote_write the scores.
    Serve(serve::Args),
    /// Replay the daemon's steps over history from Prometheus and print what it would flag.
    Backtest(backtest::Args),
    /// Simulate a Kubernetes cluster with known incidents: CSV and ground truth, or /metrics.
    Sim(sim::Args),
    /// Ask a running daemon what is happening: open incidents, their likely causes, top scores.
    Ask(ask::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo::run(&args),
        Command::Detect(args) => detect::run(&args),
        Command::Eval(cmd) => eval::run(&cmd),
        Command::Check(args) => check::run(&args),
        Command::Rules(args) => rules::run(&args),
        Command::Serve(args) => serve::run(&args),
        Command::Backtest(args) => backtest::run(&args),
        Command::Sim(args) => sim::run(&args),
        Command::Ask(args) => ask::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`portent detect -o - | head`): nothing left to say, as in
        // ripgrep. Rust ignores SIGPIPE, so this arrives as an error instead of a signal.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            // `{:#}` prints the whole chain on one line: "reading data.csv: line 3: …".
            eprintln!("portent: {e:#}");
            ExitCode::FAILURE
        }
    }
}
