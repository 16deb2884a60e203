//! `portent check`: validate a config file, PromQL included, without starting anything.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use portent_config::{Alias, Config, ModelKind, Output, format_duration};

/// Options of `portent check`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The YAML config file.
    config: PathBuf,
}

/// Loads the config and what it names that serve would read at start (the runbook
/// catalogue); prints a summary on stdout and any warnings on stderr.
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    for warning in &config.warnings {
        eprintln!("portent: warning: {}: {warning}", args.config.display());
    }
    // serve refuses to start on a catalogue that does not parse: say so here first.
    let runbooks = match &config.explain.runbooks {
        Some(p) => Some(
            portent_explain::Catalogue::load(p)
                .with_context(|| format!("explain.runbooks {}", p.display()))?,
        ),
        None => None,
    };
    print!("{}", summary(&args.config.display().to_string(), &config));
    if let (Some(p), Some(c)) = (&config.explain.runbooks, &runbooks) {
        println!(
            "  runbooks  {}: {}",
            p.display(),
            count(c.entries().len(), "entry", "entries")
        );
    }
    Ok(())
}

/// `n things` / `1 thing`.
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn aliases<'a>(it: impl Iterator<Item = &'a Alias>) -> String {
    it.map(Alias::as_str).collect::<Vec<_>>().join(", ")
}

/// A count line, then what the config sets up, one entry a line: enough to see that the
/// aliases wire up as meant, never a secret.
fn summary(name: &str, c: &Config) -> String {
    let mut s = format!(
        "{name}: ok ({}, {}, {}, {})\n",
        count(c.queries.len(), "query", "queries"),
        count(c.models.len(), "model", "models"),
        count(c.schedules.len(), "schedule", "schedules"),
        count(c.outputs.len(), "output", "outputs"),
    );
    if let Some(pull) = &c.source.pull {
        let _ = writeln!(s, "  source    pull from {}", pull.endpoint.url);
    }
    if c.source.push.is_some() {
        let _ = writeln!(
            s,
            "  source    remote_write receiver on {}",
            c.server.listen
        );
    }
    for (alias, m) in &c.models {
        let kind = match &m.kind {
            ModelKind::Auto(auto) => format!("auto ({})", auto.direction),
            ModelKind::Joint(j) => format!(
                "{} joined on {} pooled by {}",
                j.method.as_str(),
                j.join_on.join(","),
                j.pool_by.join(",")
            ),
        };
        let _ = writeln!(
            s,
            "  model     {alias}: {kind} on {}; schedules {}; outputs {}",
            aliases(m.queries.iter()),
            aliases(m.schedules.iter()),
            aliases(m.outputs.iter()),
        );
    }
    for (alias, sch) in &c.schedules {
        let _ = writeln!(
            s,
            "  schedule  {alias}: fit every {} on {}, score every {}",
            format_duration(sch.fit_every),
            format_duration(sch.fit_window),
            format_duration(sch.score_every)
        );
    }
    for (alias, o) in &c.outputs {
        let _ = match o {
            Output::Metrics => writeln!(
                s,
                "  output    {alias}: /metrics on {}",
                c.server.metrics_listen.unwrap_or(c.server.listen)
            ),
            Output::RemoteWrite(e) => writeln!(s, "  output    {alias}: remote_write to {}", e.url),
        };
    }
    s
}
