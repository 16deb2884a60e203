//! Development aid: replays the NAB corpus and prints the three profile scores and, per file,
//! the windows detected and the false positives at the standard profile's threshold.
//! `cargo run --release -p portent-eval --example nab_tune -- ../shared/datasets/nab [-v]`

use std::path::PathBuf;

use portent_engine::RefitPolicy;
use portent_eval::nab::{Corpus, Profile, Sweep};
use portent_eval::replay::{anomaly_scores, replay_corpus};
use portent_models::DetectorConfig;

/// Overrides from PORTENT_TUNE="memory=1000,shift_span=4" for quick experiments.
fn config_from_env() -> DetectorConfig {
    let mut c = DetectorConfig::default();
    let spec = std::env::var("PORTENT_TUNE").unwrap_or_default();
    for kv in spec.split(',').filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').expect("key=value");
        let v: f64 = v.parse().expect("number");
        match k {
            "memory" => c.memory = v,
            "shift_span" => c.shift_span = v,
            "flatline_factor" => c.flatline_factor = v,
            "refractory" => c.refractory = v,
            _ => panic!("unknown knob {k}"),
        }
    }
    c
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let root = PathBuf::from(
        args.next()
            .unwrap_or_else(|| "../shared/datasets/nab".into()),
    );
    let verbose = args.next().is_some();
    let corpus = Corpus::load(&root)?;
    let t = std::time::Instant::now();
    let scored = replay_corpus(
        &corpus,
        &config_from_env(),
        &RefitPolicy::default(),
        2,
        &|_| {},
    )?;
    let elapsed = t.elapsed();
    let scores = anomaly_scores(&scored);
    if let Ok(dir) = std::env::var("DUMP") {
        for (f, sc) in corpus.files.iter().zip(&scored) {
            let d = PathBuf::from(&dir).join(&f.category);
            std::fs::create_dir_all(&d)?;
            let mut out = String::from("timestamp,score,reason\n");
            for (i, s) in sc.iter().enumerate() {
                out += &format!(
                    "{},{},{}\n",
                    f.raw_timestamps[i],
                    s.score.get(),
                    s.reason.map_or("", |r| r.as_str())
                );
            }
            std::fs::write(d.join(format!("{}.csv", f.name)), out)?;
        }
    }
    let sweep = Sweep::new(&corpus, &scores)?;
    let mut std_thr: f64 = std::env::var("THR")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.5);
    for p in Profile::all() {
        let s = sweep.optimize(&p)?;
        if p.name == "standard" && std::env::var("THR").is_err() {
            std_thr = s.threshold;
        }
        println!(
            "{:<20} {:>7.2}  thr {:.4}  detected {:>3} missed {:>3} fp {:>4}",
            s.profile,
            s.normalized,
            s.threshold,
            s.detected_windows,
            s.missed_windows,
            s.false_positives
        );
    }
    println!("replay {:.2?}", elapsed);
    if verbose {
        for (f, sc) in corpus.files.iter().zip(&scores) {
            let fired = sc.iter().filter(|&&x| x >= std_thr).count();
            let fired8 = sc.iter().filter(|&&x| x >= 0.8).count();
            let detected = f
                .windows
                .iter()
                .filter(|w| (w.start..=w.end).any(|i| sc[i] >= std_thr))
                .count();
            let inside = (0..f.len())
                .filter(|&i| f.in_window(i) && sc[i] >= std_thr)
                .count();
            println!(
                "{:<55} det {:>2}/{:<2} fired {:>5} (in windows {inside:>4}) >=0.8 {fired8:>5}",
                f.key,
                detected,
                f.windows.len(),
                fired,
            );
        }
    }
    Ok(())
}
