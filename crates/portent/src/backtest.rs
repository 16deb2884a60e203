//! `portent backtest CONFIG --from … --to …`: the daemon's steps over history.
//!
//! ```text
//! portent backtest portent.yml --from now-7d
//! portent backtest portent.yml --from 2026-11-01 --to 2026-11-08 --output scores.csv
//! ```
//!
//! It runs the very [`Scheduler`] `serve` runs, tick by tick on a simulated clock: new series
//! are fitted on the history before them, refits come every `fit_every`, each score tick sees
//! only samples up to its clock. What it finds is what the daemon would have alerted on.
//!
//! The source is read once up front: every query over `[from - fit_window - score_every, to]`,
//! in chunks under the server's points-per-series limit, held in memory, and the replay then
//! reads from there. This is thousands of times fewer requests than asking Prometheus at every
//! tick (a week at `score_every: 1m` is 10,080 ticks), at the cost of holding the range in
//! memory: 16 bytes a sample, so about 0.8 MB per series for five weeks at one-minute steps.
//! Backtest a narrower query (or a shorter range) when that is too much.
//!
//! The model state in `storage.dir` is neither read nor written: a backtest starts fresh. The
//! feedback there (`feedback.json`, what operators marked through serve's API) is read: the
//! replay groups anomalies into incidents as serve would, holds back what feedback holds back
//! and leaves false positives' windows out of its fits, so it shows what would page today. It
//! prints the incidents after the intervals (`--json`: lines with `"kind": "incident"`, the
//! intervals having `"kind": "interval"`).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use portent_config::Config;
use portent_core::{Score, Timestamp};
use portent_engine::{Interval, IntervalTracker, MemorySource, Plan, Scheduler, StepScore};

use crate::detect::human_time;
use crate::incidents::{Excluding, Incidents};
use crate::pull::pull_client;
use portent_incidents::EvidencePack;

/// Arguments of `portent backtest`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The config file (YAML), as `serve` reads it.
    pub(crate) config: PathBuf,
    /// Where the replay starts: RFC 3339, `YYYY-MM-DD[ HH:MM:SS]` (UTC), unix seconds or
    /// milliseconds, or relative to now as `now-7d`. Models warm up on the history before it.
    #[arg(long)]
    pub(crate) from: String,
    /// Where it ends, in the same forms; now by default.
    #[arg(long, default_value = "now")]
    pub(crate) to: String,
    /// Also write every verdict as CSV (`-` for stdout): model, query, series, timestamp,
    /// value, score, yhat, band, reason.
    #[arg(long, short)]
    pub(crate) output: Option<PathBuf>,
    /// Print the intervals as JSON lines instead of text.
    #[arg(long)]
    pub(crate) json: bool,
    /// No progress bar.
    #[arg(long, short)]
    pub(crate) quiet: bool,
}

/// Reads a `--from`/`--to` value against the clock `now`.
fn parse_when(s: &str, now: Timestamp) -> Result<Timestamp> {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix("now") {
        let rest = rest.trim();
        if rest.is_empty() {
            return Ok(now);
        }
        let ago = rest.strip_prefix('-').with_context(|| {
            format!("{s:?}: after `now` only `-` and a duration may follow, as in now-7d")
        })?;
        let d = portent_config::parse_duration(ago.trim())
            .map_err(|e| anyhow::anyhow!("{s:?}: {e}"))?;
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        return Ok(now.add_millis(-ms));
    }
    // A bare date is midnight UTC.
    if s.len() == 10
        && s.as_bytes().get(4) == Some(&b'-')
        && let Ok(t) = portent_input::parse_timestamp(&format!("{s} 00:00:00"))
    {
        return Ok(t);
    }
    portent_input::parse_timestamp(s).with_context(|| {
        format!(
            "{s:?} is not a time: use RFC 3339 (2026-11-01T00:00:00Z), 2026-11-01 [00:00:00] \
             (UTC), unix seconds or milliseconds, or now-7d"
        )
    })
}

fn now() -> Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    Timestamp::from_millis(ms)
}

/// Runs `portent backtest`.
pub(crate) fn run(args: &Args) -> Result<()> {
    let clock = now();
    let from = parse_when(&args.from, clock).context("--from")?;
    let to = parse_when(&args.to, clock).context("--to")?;
    if from >= to {
        bail!(
            "--from ({} UTC) must be before --to ({} UTC)",
            human_time(from),
            human_time(to)
        );
    }
    let config =
        Config::load(&args.config).with_context(|| format!("loading {}", args.config.display()))?;
    for w in &config.warnings {
        eprintln!("portent: warning: {w}");
    }
    let plan = Plan::from_config(&config).context("planning the config")?;
    let mut source = prefetch(&config, &plan, from, to, args.quiet)?;

    let mut scheduler = Scheduler::new(plan)?;
    scheduler.record_scores(true);
    // Incidents as serve would have opened them, with the feedback given so far: a replay
    // shows what would page today. False positives' windows are left out of the fits.
    let incidents = Incidents::new(&config)?;
    let windows = incidents
        .as_ref()
        .map(|i| i.hub.exclusions())
        .unwrap_or_default();
    let mut source = Excluding {
        inner: &mut source,
        windows: &windows,
    };
    let mut held_back = 0usize;
    let mut tracker = IntervalTracker::new(Score::ALERT);
    for (alias, model) in &config.models {
        tracker = tracker.with_threshold(alias.as_str(), model.threshold());
    }
    let mut csv = match &args.output {
        None => None,
        Some(p) => Some(VerdictWriter::create(p)?),
    };

    let span = u64::try_from(to.millis() - from.millis()).unwrap_or(0);
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(span)
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} replaying {msg} {wide_bar} {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let (mut samples, mut errors, mut ticks) = (0usize, 0usize, 0usize);
    let mut failed: Result<()> = Ok(());
    scheduler.replay(from, to, &mut source, |report| {
        ticks += 1;
        samples += report.samples_scored;
        for e in &report.errors {
            errors += 1;
            bar.suspend(|| {
                eprintln!(
                    "portent: {} {} query {:?}: {}",
                    e.model,
                    e.request.as_str(),
                    e.query,
                    e.message
                );
            });
        }
        if let Some(i) = &incidents {
            held_back += i.observe(&report.scores, report.now).held_back_by_feedback;
        }
        for s in &report.scores {
            tracker.push(s);
            if let Some(w) = csv.as_mut()
                && failed.is_ok()
                && let Err(e) = w.write(s)
            {
                failed = Err(e);
            }
        }
        bar.set_position(u64::try_from(report.now.millis() - from.millis()).unwrap_or(0));
        bar.set_message(format!("{} UTC", human_time(report.now)));
    });
    bar.finish_and_clear();
    failed?;
    if let Some(w) = csv {
        w.finish()?;
    }
    let intervals = tracker.finish();
    let packs = incidents
        .as_ref()
        .map(|i| i.hub.packs())
        .unwrap_or_default();
    let out = io::stdout();
    let mut out = out.lock();
    if args.json {
        for i in &intervals {
            writeln!(out, "{}", interval_json(i))?;
        }
        for p in &packs {
            writeln!(out, "{}", incident_json(p))?;
        }
    } else {
        print_intervals(&mut out, &intervals)?;
        if incidents.is_some() {
            print_incidents(&mut out, &packs)?;
        }
    }
    eprintln!(
        "portent: replayed {} to {} UTC: {ticks} ticks, {samples} samples scored, {} anomalous \
         interval{}, {} incident{} ({held_back} anomalous samples held back by feedback), \
         {errors} source error{} ({:.1?})",
        human_time(from),
        human_time(to),
        intervals.len(),
        if intervals.len() == 1 { "" } else { "s" },
        packs.len(),
        if packs.len() == 1 { "" } else { "s" },
        if errors == 1 { "" } else { "s" },
        started.elapsed()
    );
    Ok(())
}

/// Reads every query of the plan over the whole replay (and the history before it) once.
fn prefetch(
    config: &Config,
    plan: &Plan,
    from: Timestamp,
    to: Timestamp,
    quiet: bool,
) -> Result<MemorySource> {
    let client = pull_client(config)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    // The earliest any tick reads: the first tick's warm-up, a fit window before its score
    // window.
    let lead = plan
        .jobs
        .iter()
        .map(|j| j.cadence.fit_window_ms + j.cadence.score_every_ms)
        .max()
        .unwrap_or(0);
    let mut source = MemorySource::new();
    let mut done: Vec<&str> = Vec::new();
    for job in &plan.jobs {
        if done.contains(&job.query.as_str()) {
            continue;
        }
        done.push(&job.query);
        // Align to the step, as the daemon's queries are, so samples sit on the same grid.
        let start = from.add_millis(-lead);
        let start = Timestamp::from_millis(start.millis() - start.millis().rem_euclid(job.step_ms));
        let spinner = if quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new_spinner()
        };
        spinner.set_message(format!(
            "reading query {} from {} to {} UTC",
            job.query,
            human_time(start),
            human_time(to)
        ));
        spinner.enable_steady_tick(Duration::from_millis(120));
        let step = Duration::from_millis(u64::try_from(job.step_ms).unwrap_or(1));
        let series = runtime
            .block_on(client.query_range(&job.expr, start, to, step))
            .with_context(|| format!("reading query {} ({})", job.query, job.expr))?;
        spinner.finish_and_clear();
        let points: usize = series.iter().map(|s| s.samples.len()).sum();
        eprintln!(
            "portent: query {}: {} series, {points} samples",
            job.query,
            series.len()
        );
        source.insert_all(&job.query, series);
    }
    Ok(source)
}

fn print_intervals(w: &mut dyn Write, intervals: &[Interval]) -> io::Result<()> {
    if intervals.is_empty() {
        return writeln!(w, "no anomalous intervals");
    }
    for i in intervals {
        let p = &i.peak;
        let reason = p.reason.map_or("-", |r| r.as_str());
        writeln!(
            w,
            "{} to {} UTC  {}  model={} query={}  peak {:.2} at {} ({reason}): value {}, expected \
             {}",
            human_time(i.from),
            human_time(i.to),
            i.labels,
            i.model,
            i.query,
            p.score.get(),
            human_time(p.t),
            num(p.value),
            num(p.yhat),
        )?;
    }
    Ok(())
}

fn num(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.4}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_owned()
    } else {
        v.to_string()
    }
}

/// The incidents of the replay, one line each.
fn print_incidents(w: &mut dyn Write, packs: &[EvidencePack]) -> io::Result<()> {
    if packs.is_empty() {
        return writeln!(w, "no incidents");
    }
    writeln!(w, "incidents:")?;
    for p in packs {
        let i = &p.incident;
        let cause = p
            .candidates
            .first()
            .and_then(|c| p.series.iter().find(|s| s.id == c.evidence_id))
            .map_or("-", |s| s.series.as_str());
        writeln!(
            w,
            "  {}  {}  from {}  {} series  most likely cause: {cause}",
            i.id, i.state, i.started_at.iso, i.series_total
        )?;
    }
    Ok(())
}

/// An incident as a JSON line: `kind` tells it from the intervals.
fn incident_json(p: &EvidencePack) -> serde_json::Value {
    let i = &p.incident;
    serde_json::json!({
        "kind": "incident",
        "id": i.id,
        "state": i.state,
        "started_at_ms": i.started_at.ms,
        "fired_at_ms": i.fired_at.as_ref().map(|a| a.ms),
        "resolved_at_ms": i.resolved_at.as_ref().map(|a| a.ms),
        "series": i.series_total,
        "candidates": p.candidates.iter().map(|c| &c.evidence_id).collect::<Vec<_>>(),
    })
}

fn interval_json(i: &Interval) -> serde_json::Value {
    let p = &i.peak;
    let finite = |v: f64| v.is_finite().then_some(v);
    serde_json::json!({
        "kind": "interval",
        "model": &*i.model,
        "query": &*i.query,
        "series": i.labels.to_string(),
        "labels": i.labels.iter()
            .map(|l| (l.name.to_string(), serde_json::Value::from(l.value)))
            .collect::<serde_json::Map<_, _>>(),
        "from": human_time(i.from),
        "to": human_time(i.to),
        "from_ms": i.from.millis(),
        "to_ms": i.to.millis(),
        "peak_score": p.score.get(),
        "peak_at_ms": p.t.millis(),
        "reason": p.reason.map(|r| r.as_str()),
        "value": finite(p.value),
        "expected": finite(p.yhat),
    })
}

/// Every verdict as CSV.
struct VerdictWriter {
    inner: csv::Writer<BufWriter<Box<dyn Write>>>,
}

impl VerdictWriter {
    fn create(path: &std::path::Path) -> Result<Self> {
        let sink: Box<dyn Write> = if path == std::path::Path::new("-") {
            Box::new(io::stdout())
        } else {
            Box::new(File::create(path).with_context(|| format!("creating {}", path.display()))?)
        };
        let mut inner = csv::Writer::from_writer(BufWriter::new(sink));
        inner.write_record([
            "model",
            "query",
            "series",
            "timestamp",
            "value",
            "score",
            "yhat",
            "yhat_lower",
            "yhat_upper",
            "reason",
        ])?;
        Ok(Self { inner })
    }

    fn write(&mut self, s: &StepScore) -> Result<()> {
        let v = &s.scored;
        self.inner.write_record([
            &*s.model,
            &*s.query,
            &s.labels.to_string(),
            &human_time(v.t),
            &v.value.to_string(),
            &v.score.get().to_string(),
            &v.yhat.to_string(),
            &v.yhat_lower.to_string(),
            &v.yhat_upper.to_string(),
            v.reason.map_or("", |r| r.as_str()),
        ])?;
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        self.inner.flush().context("writing the verdicts")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_reads_absolute_and_relative_times() {
        let now = Timestamp::from_millis(1_764_000_000_000);
        assert_eq!(parse_when("now", now).unwrap(), now);
        assert_eq!(
            parse_when("now-7d", now).unwrap(),
            now.add_millis(-7 * 86_400_000)
        );
        assert_eq!(
            parse_when("now - 90m", now).unwrap(),
            now.add_millis(-90 * 60_000)
        );
        assert_eq!(
            parse_when("2026-11-01", now).unwrap(),
            parse_when("2026-11-01T00:00:00Z", now).unwrap()
        );
        assert_eq!(
            parse_when("1700000000", now).unwrap(),
            Timestamp::from_secs(1_700_000_000)
        );
        let e = format!("{:#}", parse_when("yesterday", now).unwrap_err());
        assert!(e.contains("is not a time: use RFC 3339"), "{e}");
        let e = format!("{:#}", parse_when("now+1d", now).unwrap_err());
        assert!(e.contains("only `-` and a duration"), "{e}");
        let e = format!("{:#}", parse_when("now-7x", now).unwrap_err());
        assert!(e.contains("now-7x"), "{e}");
    }
}
