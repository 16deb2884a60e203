//! portent's Isolation Forest on the rows `bench/iforest_compare.sh` also gives scikit-learn's:
//! writes them as CSV, times the fit and the scoring, and writes portent's raw score of every
//! test row, so that the script computes both sides' ROC AUC and PR AUC with the same code.
//!
//! Run: `cargo run --release -q -p portent-models --example iforest_compare -- DIR [REPS]`.
//! Writes `DIR/train.csv` and `DIR/test.csv` (`cpu,memory,latency,errors,label`; a week of
//! rows each, the second week after the first), `DIR/portent_scores.csv` (one raw score per
//! test row, higher is more anomalous), and prints one JSON line: the median fit and score
//! times over `REPS` repetitions (default 5, after one untimed warm-up).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use portent_models::multivariate::{FeatureSet, IsolationForestConfig, ScoreRows};

#[path = "../benches/pod_rows.rs"]
mod pod_rows;

const ROWS: usize = 10_080;

fn write_rows(path: &Path, rows: &[[f64; 4]], labels: &[bool]) -> std::io::Result<()> {
    let mut w = BufWriter::new(File::create(path)?);
    writeln!(w, "cpu,memory,latency,errors,label")?;
    for (r, l) in rows.iter().zip(labels) {
        // Shortest round-trip form: Python reads the very same f64s.
        writeln!(w, "{},{},{},{},{}", r[0], r[1], r[2], r[3], u8::from(*l))?;
    }
    w.flush()
}

fn median_ms(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().ok_or("usage: iforest_compare DIR [REPS]")?;
    let reps: usize = args.next().map_or(Ok(5), |s| s.parse())?;
    let dir = Path::new(&dir);
    let (train, train_labels) = pod_rows::pod_rows(0, ROWS);
    let (test, test_labels) = pod_rows::pod_rows(ROWS as u64, ROWS);
    write_rows(&dir.join("train.csv"), &train, &train_labels)?;
    write_rows(&dir.join("test.csv"), &test, &test_labels)?;

    // scikit-learn's defaults that matter here: 100 trees of 256 rows. portent's fit also
    // trims the worst 2% of the window and fits again, and calibrates; all of it is timed.
    let config = IsolationForestConfig {
        n_trees: 100,
        subsample: 256,
        ..IsolationForestConfig::default()
    };
    let schema = FeatureSet::new(["cpu", "memory", "latency", "errors"])?;
    let mut forest = config.fit(schema.clone(), &train)?;
    let mut fits = Vec::with_capacity(reps);
    for _ in 0..reps {
        let started = Instant::now();
        forest = config.fit(schema.clone(), std::hint::black_box(&train))?;
        fits.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let mut scores = forest.score_rows(&test)?;
    let mut scorings = Vec::with_capacity(reps);
    for _ in 0..reps {
        let started = Instant::now();
        scores = forest.score_rows(std::hint::black_box(&test))?;
        scorings.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let mut w = BufWriter::new(File::create(dir.join("portent_scores.csv"))?);
    writeln!(w, "raw")?;
    for s in &scores {
        writeln!(w, "{}", s.raw)?;
    }
    w.flush()?;
    println!(
        "{{\"fit_ms\": {:.3}, \"score_ms\": {:.3}, \"reps\": {reps}, \"train_rows\": {ROWS}, \
         \"test_rows\": {ROWS}, \"n_trees\": {}, \"subsample\": {}}}",
        median_ms(fits),
        median_ms(scorings),
        config.n_trees,
        config.subsample
    );
    Ok(())
}
