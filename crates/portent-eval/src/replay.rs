//! Runs portent's detector over a corpus the way it runs live: one [`SeriesRunner`] per file,
//! samples in order, every score from the past only.

use std::sync::atomic::{AtomicUsize, Ordering};

use portent_core::{FitError, Sample, Scored};
use portent_engine::{RefitPolicy, SeriesRunner};
use portent_models::DetectorConfig;

use crate::nab::{Corpus, CorpusFile};

/// Scores every row of one file, in order.
pub fn replay_file(
    file: &CorpusFile,
    config: &DetectorConfig,
    policy: &RefitPolicy,
) -> Result<Vec<Scored>, FitError> {
    let mut runner = SeriesRunner::new(*config, *policy)?;
    Ok(file
        .timestamps
        .iter()
        .zip(&file.values)
        .map(|(&t, &v)| runner.push(Sample::new(t, v)))
        .collect())
}

/// The anomaly score of every row of every file, in corpus order, computed on `threads`
/// threads (files are independent series). `progress` is called with each finished file's
/// row count.
pub fn replay_corpus(
    corpus: &Corpus,
    config: &DetectorConfig,
    policy: &RefitPolicy,
    threads: usize,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<Vec<Vec<Scored>>, FitError> {
    config.validate()?;
    let next = AtomicUsize::new(0);
    let mut out: Vec<Option<Result<Vec<Scored>, FitError>>> =
        (0..corpus.files.len()).map(|_| None).collect();
    let slots: Vec<std::sync::Mutex<&mut Option<_>>> =
        out.iter_mut().map(std::sync::Mutex::new).collect();
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(file) = corpus.files.get(i) else {
                        break;
                    };
                    let r = replay_file(file, config, policy);
                    progress(file.len());
                    if let Ok(mut slot) = slots[i].lock() {
                        **slot = Some(r);
                    }
                }
            });
        }
    });
    drop(slots);
    out.into_iter()
        .map(|r| r.unwrap_or_else(|| Err(FitError::Config("replay: a worker stopped".into()))))
        .collect()
}

/// Just the scores, as NAB wants them.
pub fn anomaly_scores(scored: &[Vec<Scored>]) -> Vec<Vec<f64>> {
    scored
        .iter()
        .map(|f| f.iter().map(|s| s.score.get()).collect())
        .collect()
}
