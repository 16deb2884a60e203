//! `portent detect`: a file in, per-sample scores, a summary and a plot out.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};
use portent_core::{Direction, Labels, Scored, Series};
use portent_engine::{RefitPolicy, SeriesRunner};
use portent_input::{Format, InputError};
use portent_models::{DetectorConfig, Exhaustion};

use crate::intervals::{Interval, intervals};
use crate::{plot, sample};

/// Options of `portent detect`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The file to score: CSV (`timestamp,value`, or a header and one column per series) or a
    /// Prometheus query_range JSON response. Omit it with --sample.
    #[arg(required_unless_present = "sample")]
    file: Option<PathBuf>,
    /// Score portent's built-in sample series (two weeks at one minute with injected incidents)
    /// instead of a file.
    #[arg(long, conflicts_with = "file")]
    sample: bool,
    /// Input format.
    #[arg(long, default_value = "auto", value_parser = Format::from_str)]
    format: Format,
    /// Write per-sample scores here (`-` for standard output; the summary then goes to
    /// standard error).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Format of --output: csv or json (default: from the file extension, else csv).
    #[arg(long)]
    output_format: Option<OutputFormat>,
    /// Draw the series, its expected band and the anomalies to this SVG file (one file per
    /// series, numbered, when the input has several).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Samples scoring at or above this are anomalous.
    // Negative numbers are taken as values so that `--threshold -0.5` gets run()'s range
    // message, not clap's "unexpected argument '-0' found".
    #[arg(long, default_value_t = 0.8, allow_negative_numbers = true)]
    threshold: f64,
    /// Which deviations count: above, below or both.
    #[arg(long, default_value = "both", value_parser = Direction::from_str)]
    direction: Direction,
    /// Ignore deviations smaller than this, in the series' units.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    min_abs_deviation: f64,
    /// Ignore deviations smaller than this fraction of the expected value.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    min_rel_deviation: f64,
    /// A limit the series must not reach (a disk's size, a memory limit): report when the
    /// current trend reaches it.
    #[arg(long, allow_negative_numbers = true)]
    limit: Option<f64>,
    /// Skip CSV rows whose time is not after the previous row's (repeated timestamps, a clock
    /// that stepped back) instead of stopping at the first; how many were skipped is reported.
    #[arg(long)]
    skip_out_of_order: bool,
    /// Do not draw a progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OutputFormat {
    Csv,
    Json,
}

/// One scored series.
struct Scoredseries {
    labels: Labels,
    scored: Vec<Scored>,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&args.threshold) {
        bail!("--threshold {}: must be between 0 and 1", args.threshold);
    }
    let config = DetectorConfig {
        direction: args.direction,
        min_abs_deviation: args.min_abs_deviation,
        min_rel_deviation: args.min_rel_deviation,
        ..DetectorConfig::default()
    };
    for (flag, v) in [
        ("--min-abs-deviation", args.min_abs_deviation),
        ("--min-rel-deviation", args.min_rel_deviation),
    ] {
        if v.is_nan() || v < 0.0 {
            bail!("{flag} {v}: must be 0 or more");
        }
    }
    config.validate().context("detector options")?;

    let (name, series) = match &args.file {
        Some(path) => {
            let options = portent_input::Options {
                skip_out_of_order: args.skip_out_of_order,
            };
            let parsed =
                portent_input::read_file_with(path, args.format, &options).map_err(|e| {
                    if matches!(e.error, InputError::OutOfOrder { .. }) {
                        anyhow!("{e} (or pass --skip-out-of-order to skip such rows)")
                    } else {
                        e.into()
                    }
                })?;
            if let Some(line) = parsed.first_skipped_line {
                eprintln!(
                    "portent: {}: skipped {} row{} not after the previous one (the first at line {line})",
                    path.display(),
                    parsed.skipped,
                    if parsed.skipped == 1 { "" } else { "s" },
                );
            }
            (path.display().to_string(), parsed.series)
        }
        None => ("sample".to_string(), vec![sample::series()]),
    };
    if series.is_empty() {
        bail!("{name}: no series found");
    }
    let total: usize = series.iter().map(|s| s.samples.len()).sum();
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} scoring {pos}/{len} samples {wide_bar} {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let results = score_all(series, &config, &bar)?;
    bar.finish_and_clear();

    let to_stdout = args.output.as_deref() == Some(Path::new("-"));
    if let Some(out) = &args.output {
        let format = args.output_format.unwrap_or_else(|| {
            if out
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("json"))
            {
                OutputFormat::Json
            } else {
                OutputFormat::Csv
            }
        });
        write_scores(out, format, &results)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    let mut summary: Box<dyn Write> = if to_stdout {
        Box::new(io::stderr().lock())
    } else {
        Box::new(io::stdout().lock())
    };
    for (i, r) in results.iter().enumerate() {
        let iv = intervals(&r.scored, args.threshold, 10);
        print_summary(&mut summary, &name, r, &iv, args.threshold)?;
        if let Some(limit) = args.limit {
            print_exhaustion(&mut summary, r, limit)?;
        }
        if let Some(plot_path) = &args.plot {
            if r.scored.is_empty() {
                // A wide CSV column or a query result with no samples: nothing to draw, and no
                // reason to fail the other series.
                writeln!(summary, "  plot: none (no samples)")?;
                continue;
            }
            let path = numbered(plot_path, i, results.len());
            let title = if r.labels.is_empty() {
                name.clone()
            } else {
                r.labels.to_string()
            };
            plot::write_svg(&path, &title, &r.scored, args.threshold)?;
            writeln!(summary, "  plot: {}", path.display())?;
        }
    }
    Ok(())
}

/// Scores every series, in parallel across series (each series is independent and in order).
fn score_all(
    series: Vec<Series>,
    config: &DetectorConfig,
    bar: &ProgressBar,
) -> anyhow::Result<Vec<Scoredseries>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = series.len().div_ceil(threads).max(1);
    let mut series = series;
    let mut out = Vec::with_capacity(series.len());
    std::thread::scope(|s| -> anyhow::Result<()> {
        let mut handles = Vec::new();
        while !series.is_empty() {
            let batch: Vec<Series> = series.drain(..chunk.min(series.len())).collect();
            handles.push(s.spawn(move || -> anyhow::Result<Vec<Scoredseries>> {
                batch
                    .into_iter()
                    .map(|ser| {
                        let mut runner = SeriesRunner::new(*config, RefitPolicy::default())?;
                        let mut scored = Vec::with_capacity(ser.samples.len());
                        for (i, smp) in ser.samples.iter().enumerate() {
                            scored.push(runner.push(*smp));
                            if i % 65_536 == 65_535 {
                                bar.inc(65_536);
                            }
                        }
                        bar.inc((ser.samples.len() % 65_536) as u64);
                        Ok(Scoredseries {
                            labels: ser.labels,
                            scored,
                        })
                    })
                    .collect()
            }));
        }
        for h in handles {
            let part = h
                .join()
                .map_err(|_| anyhow::anyhow!("a scoring thread panicked"))??;
            out.extend(part);
        }
        Ok(())
    })?;
    Ok(out)
}

fn numbered(path: &Path, i: usize, n: usize) -> PathBuf {
    if n == 1 {
        return path.to_path_buf();
    }
    let stem = path
        .file_stem()
        .map_or_else(|| "plot".into(), |s| s.to_string_lossy());
    let ext = path
        .extension()
        .map_or_else(|| "svg".into(), |s| s.to_string_lossy());
    path.with_file_name(format!("{stem}-{}.{ext}", i + 1))
}

/// `2024-01-03 10:05:00` (UTC).
pub(crate) fn human_time(t: portent_core::Timestamp) -> String {
    jiff::Timestamp::from_millisecond(t.millis())
        .map(|ts| ts.strftime("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|_| format!("{}ms", t.millis()))
}

fn human_duration(ms: i64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// Time to exhaustion at the end of the series, from a slowly smoothed local trend.
fn print_exhaustion(w: &mut dyn Write, r: &Scoredseries, limit: f64) -> io::Result<()> {
    let mut e = Exhaustion::new(limit, 0.2, 0.02);
    for s in &r.scored {
        e.push(s.t, s.value);
    }
    let last = r.scored.iter().rev().find(|s| s.value.is_finite());
    match (e.millis_to_limit(), last) {
        (Some(0.0), _) => writeln!(w, "  limit {}: already reached", fmt_num(limit)),
        (Some(ms), Some(last)) => writeln!(
            w,
            "  limit {}: reached in {} at the current trend (around {} UTC)",
            fmt_num(limit),
            human_duration(ms as i64),
            human_time(last.t.add_millis(ms as i64)),
        ),
        _ => writeln!(w, "  limit {}: not heading towards it", fmt_num(limit)),
    }
}

fn print_summary(
    w: &mut dyn Write,
    name: &str,
    r: &Scoredseries,
    iv: &[Interval],
    threshold: f64,
) -> io::Result<()> {
    let who = if r.labels.is_empty() {
        name.to_string()
    } else {
        r.labels.to_string()
    };
    let unusable = r.scored.iter().filter(|s| !s.value.is_finite()).count();
    write!(
        w,
        "{who}: {} samples, {} anomalous interval{} (score >= {threshold:.2})",
        r.scored.len(),
        iv.len(),
        if iv.len() == 1 { "" } else { "s" }
    )?;
    if unusable > 0 {
        write!(w, ", {unusable} samples without a value (NaN/Inf)")?;
    }
    writeln!(w)?;
    for i in iv {
        writeln!(
            w,
            "  {} .. {} UTC ({:>6})  peak {:.2} at {}  {:<17} value {} expected {}",
            human_time(i.start),
            human_time(i.end),
            human_duration(i.end.millis_since(i.start)),
            i.peak,
            human_time(i.peak_at),
            i.reason.map_or("-", |r| r.as_str()),
            fmt_num(i.peak_value),
            fmt_num(i.expected),
        )?;
    }
    Ok(())
}

fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e7).contains(&a) {
        format!("{v:.3e}")
    } else {
        format!("{:.4}", v)
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

fn write_scores(path: &Path, format: OutputFormat, results: &[Scoredseries]) -> anyhow::Result<()> {
    let sink: Box<dyn Write> = if path == Path::new("-") {
        Box::new(io::stdout().lock())
    } else {
        Box::new(File::create(path)?)
    };
    let mut w = BufWriter::with_capacity(1 << 16, sink);
    match format {
        OutputFormat::Csv => write_csv(&mut w, results)?,
        OutputFormat::Json => write_json(&mut w, results)?,
    }
    w.flush()?;
    Ok(())
}

/// CSV, one row per sample. Written by hand with `ryu` for the floats: formatting is most of
/// the cost of writing millions of rows, and std's `Display` for `f64` is several times slower.
/// Rows are assembled in a buffer and handed to `w` in large pieces, not field by field
/// through `dyn Write`.
fn write_csv(w: &mut dyn Write, results: &[Scoredseries]) -> io::Result<()> {
    writeln!(
        w,
        "series,timestamp,value,anomaly_score,yhat,yhat_lower,yhat_upper,reason"
    )?;
    let mut f = ryu::Buffer::new();
    let mut num = |buf: &mut Vec<u8>, v: f64| {
        buf.extend_from_slice(if v == 0.0 && v.is_sign_positive() {
            b"0.0" // ryu's form, without ryu: most scores are exactly zero
        } else if v.is_finite() {
            f.format_finite(v).as_bytes()
        } else if v.is_nan() {
            b"NaN"
        } else if v > 0.0 {
            b"+Inf"
        } else {
            b"-Inf"
        });
    };
    let mut times = Rfc3339::default();
    let mut buf = Vec::with_capacity(1 << 17);
    for r in results {
        let labels = csv_field(&r.labels.to_string());
        for s in &r.scored {
            buf.extend_from_slice(labels.as_bytes());
            buf.push(b',');
            times.write(&mut buf, s.t);
            for v in [s.value, s.score.get(), s.yhat, s.yhat_lower, s.yhat_upper] {
                buf.push(b',');
                num(&mut buf, v);
            }
            buf.push(b',');
            buf.extend_from_slice(s.reason.map_or("", |r| r.as_str()).as_bytes());
            buf.push(b'\n');
            if buf.len() >= 1 << 16 {
                w.write_all(&buf)?;
                buf.clear();
            }
        }
    }
    w.write_all(&buf)
}

/// RFC 3339 timestamps exactly as [`rfc3339`] (jiff) writes them, cheaply for whole seconds:
/// the date is formatted by jiff once per day and the time of day by hand. Formatting each
/// timestamp afresh was a third of the cost of writing the scores of a long series.
#[derive(Default)]
struct Rfc3339 {
    /// The day (since the epoch) whose `YYYY-MM-DDT` is in `date`, if jiff writes it that way.
    day: Option<i64>,
    date: Option<[u8; 11]>,
}

impl Rfc3339 {
    fn write(&mut self, out: &mut Vec<u8>, t: portent_core::Timestamp) {
        let ms = t.millis();
        if ms.rem_euclid(1000) == 0 {
            let secs = ms.div_euclid(1000);
            let (day, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
            if self.day != Some(day) {
                self.day = Some(day);
                // jiff's own midnight, so that the date is jiff's to the byte; a year that is
                // not four digits (before 0000 or after 9999) is left to jiff.
                let midnight = day
                    .checked_mul(86_400_000)
                    .map(|ms| rfc3339(portent_core::Timestamp::from_millis(ms)));
                self.date = midnight
                    .filter(|m| m.len() == 20 && m.ends_with("T00:00:00Z"))
                    .and_then(|m| m.as_bytes()[..11].try_into().ok());
            }
            if let Some(date) = &self.date {
                out.extend_from_slice(date);
                for (i, v) in [sod / 3600, sod / 60 % 60, sod % 60]
                    .into_iter()
                    .enumerate()
                {
                    if i > 0 {
                        out.push(b':');
                    }
                    out.extend_from_slice(&[b'0' + (v / 10) as u8, b'0' + (v % 10) as u8]);
                }
                out.push(b'Z');
                return;
            }
        }
        out.extend_from_slice(rfc3339(t).as_bytes());
    }
}

fn rfc3339(t: portent_core::Timestamp) -> String {
    jiff::Timestamp::from_millisecond(t.millis())
        .map(|ts| ts.to_string())
        .unwrap_or_else(|_| t.millis().to_string())
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// JSON: `[{"labels": {...}, "samples": [{"t": ms, "value", "score", "yhat", "yhat_lower",
/// "yhat_upper", "reason"}, ...]}]`; NaN and infinities become `null`.
fn write_json(w: &mut dyn Write, results: &[Scoredseries]) -> anyhow::Result<()> {
    #[derive(serde::Serialize)]
    struct Out<'a> {
        labels: std::collections::BTreeMap<&'a str, &'a str>,
        samples: &'a [Scored],
    }
    let out: Vec<Out<'_>> = results
        .iter()
        .map(|r| Out {
            labels: r.labels.iter().map(|l| (l.name, l.value)).collect(),
            samples: &r.scored,
        })
        .collect();
    serde_json::to_writer(&mut *w, &out)?;
    writeln!(w)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use portent_core::Timestamp;

    #[test]
    fn csv_numbers_are_ryus() {
        let values = [0.0, -0.0, 1.5, 1e-300, 123_456.789, f64::NAN, f64::INFINITY];
        let scored = values
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let mut s = Scored::unknown(Timestamp::from_secs(i as i64), v);
                (s.yhat, s.yhat_lower, s.yhat_upper) = (v, -v, 0.0);
                s
            })
            .collect();
        let results = [Scoredseries {
            labels: Labels::empty(),
            scored,
        }];
        let mut out = Vec::new();
        write_csv(&mut out, &results).unwrap();
        let text = String::from_utf8(out).unwrap();
        let mut f = ryu::Buffer::new();
        let mut ryu = |v: f64| match v {
            v if v.is_nan() => "NaN".to_string(),
            f64::INFINITY => "+Inf".to_string(),
            f64::NEG_INFINITY => "-Inf".to_string(),
            v => f.format_finite(v).to_string(),
        };
        for (line, &v) in text.lines().skip(1).zip(&values) {
            let fields: Vec<&str> = line.split(',').collect();
            let want = [
                ryu(v),
                "0.0".to_string(),
                ryu(v),
                ryu(-v),
                "0.0".to_string(),
            ];
            assert_eq!(fields[2..7], want, "{line}");
        }
    }

    #[test]
    fn fast_timestamps_are_jiffs_to_the_byte() {
        let mut times = Rfc3339::default();
        let day = 86_400_000i64;
        let mut probes = vec![
            0,
            -1000,
            -1,
            1_700_000_000_000,
            1_700_000_000_500,   // sub-second: jiff's own form
            253_402_300_799_000, // 9999-12-31T23:59:59Z
            -62_167_219_200_000, // 0000-01-01T00:00:00Z
            -62_167_219_201_000, // the second before: year -1
            i64::MIN,
            i64::MAX,
        ];
        // Every second around a day boundary, and a few days apart, in order and not.
        probes.extend((-5..5).map(|s| 19_675 * day + s * 1000));
        probes.extend((0..2000).map(|i| 1_600_000_000_000 + i * 15_000 * 97));
        probes.extend((0..200).rev().map(|i| 1_600_000_000_000 - i * 3_599_000));
        for ms in probes {
            let t = Timestamp::from_millis(ms);
            let mut out = Vec::new();
            times.write(&mut out, t);
            assert_eq!(String::from_utf8(out).unwrap(), rfc3339(t), "{ms}");
        }
    }
}
