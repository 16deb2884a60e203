//! Development aid: replays one NAB file and prints rows `from..to` of its scores.
//! `cargo run --release -p portent-eval --example nab_file -- ROOT KEY FROM TO`

use std::path::PathBuf;

use portent_core::Detect;
use portent_engine::RefitPolicy;
use portent_eval::nab::Corpus;
use portent_eval::replay::replay_file;
use portent_models::DetectorConfig;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let corpus = Corpus::load(&PathBuf::from(&a[0]))?;
    let f = corpus.file(&a[1]).ok_or("no such file")?;
    let from: usize = a[2].parse()?;
    let to: usize = a[3].parse::<usize>()?.min(f.len());
    let scored = replay_file(f, &DetectorConfig::default(), &RefitPolicy::default())?;
    println!("windows {:?} probation {}", f.windows, f.probationary_len());
    for (i, s) in scored.iter().enumerate().take(to).skip(from) {
        println!(
            "{i:>6} {} v {:>10.3} yhat {:>10.3} [{:>10.3}, {:>10.3}] score {:.3} {:?}{}",
            f.raw_timestamps[i],
            s.value,
            s.yhat,
            s.yhat_lower,
            s.yhat_upper,
            s.score.get(),
            s.reason,
            if f.in_window(i) { " W" } else { "" }
        );
    }
    let _ = portent_models::Detector::tick;
    let _: Option<&dyn Fn()> = None;
    let _ = <portent_models::Detector as Detect>::observe;
    Ok(())
}
