//! Writing a detector's scores in NAB's results layout, so NAB's own scorer can check ours.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::sweep::check_scores;
use super::{Corpus, CorpusFile, NabError};

/// The name NAB's normalisation step looks for: `results/null/`.
pub const NULL_DETECTOR: &str = "null";

/// Where NAB expects a detector's results for `file`:
/// `out_dir/<detector>/<category>/<detector>_<name>.csv`.
pub fn results_path(out_dir: &Path, detector: &str, file: &CorpusFile) -> PathBuf {
    out_dir
        .join(detector)
        .join(&file.category)
        .join(format!("{detector}_{}.csv", file.name))
}

/// Writes a detector's scores as NAB results files, one per corpus file, at
/// [`results_path`]. Each has the data file's rows with the header
/// `timestamp,value,anomaly_score,label`: timestamps verbatim, values and scores as the
/// shortest text that reads back to the same number, and `label` 1 inside a window, 0 outside,
/// as NAB's own runner writes it (NAB's scorer reads only `anomaly_score`; it takes timestamps
/// and windows from the data and label files).
///
/// The detector name may hold ASCII letters, digits and `-`: NAB splits results file names at
/// the first `_` to find the detector.
pub fn write_results(
    out_dir: &Path,
    detector: &str,
    corpus: &Corpus,
    scores: &[Vec<f64>],
) -> Result<(), NabError> {
    check_detector_name(detector)?;
    check_scores(corpus, scores)?;
    for (file, scores) in corpus.files.iter().zip(scores) {
        let path = results_path(out_dir, detector, file);
        write_file(&path, file, scores).map_err(|source| NabError::Io { path, source })?;
    }
    Ok(())
}

/// Writes the null detector's results (every score 0) under `out_dir/null/`. NAB normalises
/// against the null detector's score, so its results must sit beside any detector's that NAB
/// is asked to score. (NAB's own null detector writes 0.5 everywhere; any constant scores the
/// same.)
pub fn write_null_results(out_dir: &Path, corpus: &Corpus) -> Result<(), NabError> {
    let zeros: Vec<Vec<f64>> = corpus.files.iter().map(|f| vec![0.0; f.len()]).collect();
    write_results(out_dir, NULL_DETECTOR, corpus, &zeros)
}

fn check_detector_name(name: &str) -> Result<(), NabError> {
    let reason = if name.is_empty() {
        Some("is empty")
    } else if name.contains('_') {
        Some("contains '_', which NAB's scorer uses to split the detector from the file name")
    } else if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        Some("may hold only ASCII letters, digits and '-'")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(NabError::Detector {
            name: name.to_owned(),
            reason: reason.to_owned(),
        }),
        None => Ok(()),
    }
}

fn write_file(path: &Path, file: &CorpusFile, scores: &[f64]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let mut out = BufWriter::new(fs::File::create(path)?);
    out.write_all(b"timestamp,value,anomaly_score,label\n")?;
    for (i, ((ts, value), score)) in file
        .raw_timestamps
        .iter()
        .zip(&file.values)
        .zip(scores)
        .enumerate()
    {
        let label = u8::from(file.in_window(i));
        writeln!(out, "{ts},{value},{score},{label}")?;
    }
    out.flush()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::nab::Window;

    #[test]
    fn writes_rows_verbatim_with_labels() {
        let file = CorpusFile::synthetic(
            "cat",
            "some_file",
            vec![1.0, 2.5, -3.0, 1e-7],
            vec![Window::new(1, 2)],
        )
        .unwrap();
        let corpus = Corpus::from_files(vec![file]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        write_results(dir.path(), "portent", &corpus, &[vec![0.0, 0.25, 1.0, 0.1]]).unwrap();
        let text =
            fs::read_to_string(dir.path().join("portent/cat/portent_some_file.csv")).unwrap();
        assert_eq!(
            text,
            "timestamp,value,anomaly_score,label\n\
             2014-01-01 00:00:00,1,0,0\n\
             2014-01-01 00:05:00,2.5,0.25,1\n\
             2014-01-01 00:10:00,-3,1,1\n\
             2014-01-01 00:15:00,0.0000001,0.1,0\n"
        );
    }

    #[test]
    fn detector_names_nab_cannot_split_are_rejected() {
        let corpus = Corpus::default();
        let dir = tempfile::tempdir().unwrap();
        let e = write_results(dir.path(), "my_detector", &corpus, &[])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "detector name \"my_detector\": contains '_', which NAB's scorer uses to split the detector from the file name"
        );
        assert!(write_results(dir.path(), "../x", &corpus, &[]).is_err());
        assert!(write_results(dir.path(), "", &corpus, &[]).is_err());
        assert!(write_results(dir.path(), "ok-Name2", &corpus, &[]).is_ok());
    }
}
