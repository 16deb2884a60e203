//! What can go wrong when loading the corpus, scoring a detector or writing its results.

use std::path::PathBuf;

/// An error from the NAB module. Every message names the file (and line, where there is one)
/// or the corpus key at fault, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NabError {
    /// A file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// A data file is not the `timestamp,value` CSV that NAB ships.
    #[error("{}:{line}: {reason}", path.display())]
    Data {
        /// The data file.
        path: PathBuf,
        /// The 1-based line of the file (the header is line 1).
        line: u64,
        /// What is wrong with that line.
        reason: String,
    },
    /// A JSON file (windows or profiles) is not valid JSON of the expected shape.
    #[error("{}: {source}", path.display())]
    Json {
        /// The JSON file.
        path: PathBuf,
        /// The parser's message, which carries the line and column.
        #[source]
        source: serde_json::Error,
    },
    /// The windows file names a data file or a window that the scorer cannot use.
    #[error("{}: {key}: {reason}", path.display())]
    Windows {
        /// The windows file.
        path: PathBuf,
        /// The corpus key the entry is for, such as `realKnownCause/nyc_taxi.csv`.
        key: String,
        /// What is wrong with the entry.
        reason: String,
    },
    /// A data file under `data/` has no entry in the windows file.
    #[error(
        "{}: not named in {}; every data file needs an entry there, an empty list if it has no anomaly",
        path.display(),
        windows.display()
    )]
    Unlisted {
        /// The data file.
        path: PathBuf,
        /// The windows file that should name it.
        windows: PathBuf,
    },
    /// A profile in a profiles file is unusable.
    #[error("{}: profile {name:?}: {reason}", path.display())]
    Profile {
        /// The profiles file.
        path: PathBuf,
        /// The profile's name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A corpus assembled in memory breaks an invariant the scorer relies on.
    #[error("corpus: {key}: {reason}")]
    Corpus {
        /// The corpus key of the file at fault.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A detector's scores do not fit the corpus file they are for.
    #[error("scores: {key}: {reason}")]
    Scores {
        /// The corpus key of the file the scores are for.
        key: String,
        /// What is wrong with them.
        reason: String,
    },
    /// There is not one score vector per corpus file.
    #[error(
        "scores: {found} score vectors for a corpus of {expected} files; pass one per file, in corpus order"
    )]
    ScoreFiles {
        /// The number of files in the corpus.
        expected: usize,
        /// The number of score vectors given.
        found: usize,
    },
    /// A fixed threshold was NaN.
    #[error("threshold: {0} is not a number")]
    Threshold(f64),
    /// A detector name cannot be used in NAB's results layout.
    #[error("detector name {name:?}: {reason}")]
    Detector {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The normalised score is undefined because the perfect detector does no better than the
    /// null detector (a corpus without windows, or a profile with no reward for a detection).
    #[error(
        "cannot normalise: the perfect raw score {perfect} is not above the null raw score {null}; the corpus needs at least one scoring window"
    )]
    Normalise {
        /// The null detector's raw score.
        null: f64,
        /// The perfect detector's raw score.
        perfect: f64,
    },
}
